"""The label logits: the logits of the label tokens (" A", " B", " Tie") at the position that predicts the label,
through the model's `--label_head` when it has one. `label_logits` is the one function that turns a model's logits
into label logits; training (arena/losses.py, either loss) and scoring (arena/scoring.py) both call it.

Training finds the positions from the batch's labels (`labels != -100`, shifted by one). For `--loss label` the
model runs its own forward pass (so DDP, unsloth's padding-free batches and the model's final logit soft-capping
all apply) with its output head standing in as `LabelRows` for that one call: only the label tokens' rows of the
head are multiplied, never a [batch, length, vocab] tensor. Scoring keeps the logits of the last position only.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


def label_logits(model, logits: torch.Tensor, label_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[..., labels] label logits (float32) through the model's label head when it has one. `logits` are over the
    vocabulary (the label columns `label_ids` are taken) or, with `label_ids` None, already the label tokens' own
    (as the model outputs them: for Gemma-2, softcapped)."""
    if label_ids is not None:
        logits = logits.index_select(-1, label_ids)
    head = getattr(model, "label_head", None)
    return head(logits) if head is not None else logits.float()


def with_label_logits(model, logits: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """Logits over the vocabulary (float32) with the label columns replaced by `label_logits` (--loss token with a
    label head: the head changes those columns of the full softmax)."""
    return logits.float().index_copy(-1, label_ids, label_logits(model, logits, label_ids))


class LabelRows(torch.nn.Module):
    """Stands in for a model's output head for one forward pass: the hidden states at `positions` (rows, columns)
    times the head's rows of the label tokens, [len(rows), len(label_ids)]."""

    def __init__(self, head: torch.nn.Module, label_ids: list[int], positions: tuple[torch.Tensor, torch.Tensor]):
        super().__init__()
        ids = torch.as_tensor(label_ids, device=head.weight.device)
        self.weight = head.weight.index_select(0, ids)  # read by callers for the head's dtype and device
        self.bias = head.bias.index_select(0, ids) if getattr(head, "bias", None) is not None else None
        self.positions = positions

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        rows, columns = self.positions
        return F.linear(hidden[rows, columns].to(self.weight.dtype), self.weight, self.bias)


@contextmanager
def label_rows(model, label_ids: list[int], positions):
    """The base model's output head replaced by a LabelRows, and put back afterwards."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    base.set_output_embeddings(LabelRows(head, label_ids, positions))
    try:
        yield
    finally:
        base.set_output_embeddings(head)


def trained_label_logits(
    model, inputs: dict, label_ids: list[int], unwrapped=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(`label_logits` [N, len(label_ids)], class index [N]) of the N trained label tokens in a batch, in batch order
    (padded rows, or one padding-free row). `model` is what the trainer calls (possibly DDP-wrapped), `unwrapped`
    the model inside it (whose label head applies)."""
    unwrapped = unwrapped if unwrapped is not None else model
    labels = inputs["labels"]
    rows, columns = (labels != -100).nonzero(as_tuple=True)
    if (columns == 0).any():
        raise ValueError("a label token at position 0 has no position to be predicted from")
    ids = torch.as_tensor(label_ids, device=labels.device)
    match = labels[rows, columns].unsqueeze(1) == ids
    if not match.any(dim=1).all():
        raise ValueError("a trained token is not one of the label tokens")
    forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    with label_rows(unwrapped, label_ids, (rows, columns - 1)):
        logits = model(**forward_inputs, use_cache=False).logits
    return label_logits(unwrapped, logits), match.int().argmax(dim=1)


def trained_position_logits(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits over the vocabulary at every position whose next token carries loss, [n, vocab], and those tokens [n].
    The model computes logits only from the earliest such position on (`logits_to_keep`), not for the whole row."""
    labels = inputs["labels"]
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)
    width = labels.shape[1]
    keep = width - int(cols.min()) if len(cols) else 1
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**model_inputs, logits_to_keep=keep, use_cache=False).logits
    return logits[rows, cols - (width - keep)], labels[rows, cols + 1]
