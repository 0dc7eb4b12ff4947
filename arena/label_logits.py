"""The label logits: the logits of the label tokens (" A", " B", " Tie") at the position that predicts the label,
from the LM head's rows of those tokens or from the model's `--label_head` (arena/label_head.py). `label_output` is
the one place that computes them; training (arena/losses.py, either loss) and scoring (arena/scoring.py) both use it.

For one forward pass the model's output layer is replaced by `LabelRows`: the model runs its own forward (so DDP,
unsloth's padding-free batches and the model's final logit soft-capping all apply), and only the label rows are
multiplied, at the positions asked for (training: from the batch's labels, `labels != -100` shifted by one; scoring:
the last position, `logits_to_keep=1`), never a [batch, length, vocab] tensor. The token loss with a label head
needs the whole vocabulary at the label position: there the output layer is `VocabWithLabelRows`, the LM head with
the label tokens' columns computed by the head.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from arena.label_head import output_layer


class LabelRows(torch.nn.Module):
    """Stands in for a model's output layer: [..., labels] logits of the hidden states (only those at `positions`,
    (rows, columns), when given) times `weight` [labels, hidden] plus `bias`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, positions=None):
        super().__init__()
        self.weight, self.bias, self.positions = weight, bias, positions  # weight: read by unsloth for its dtype

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.positions is not None:
            rows, columns = self.positions
            hidden = hidden[rows, columns]
        return F.linear(hidden.to(self.weight.dtype), self.weight, self.bias)


class VocabWithLabelRows(torch.nn.Module):
    """Stands in for a model's output layer: its logits over the vocabulary with the label tokens' columns computed
    by the label head (--loss token with a head)."""

    def __init__(self, lm_head: torch.nn.Module, head: torch.nn.Module):
        super().__init__()
        self.lm_head, self.head, self.weight = lm_head, head, lm_head.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        return logits.index_copy(-1, self.head.label_ids, self.head(hidden).to(logits.dtype))


@contextmanager
def label_output(model, label_ids: list[int], positions=None, vocab: bool = False):
    """Within it, the model's logits are the label logits [..., labels] (at `positions` when given) through the
    model's label head, else the LM head's rows of `label_ids`; with `vocab`, logits over the vocabulary whose label
    columns come from the label head. `model` is the unwrapped model (the label head is its submodule)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm_head = output_layer(model)
    head = getattr(model, "label_head", None)
    if vocab:
        replacement = lm_head if head is None else VocabWithLabelRows(lm_head, head)
    elif head is not None:
        replacement = LabelRows(head.weight, head.bias, positions)
    else:
        ids = torch.as_tensor(label_ids, device=lm_head.weight.device)
        bias = getattr(lm_head, "bias", None)
        replacement = LabelRows(lm_head.weight.index_select(0, ids),
                                bias.index_select(0, ids) if bias is not None else None, positions)
    base.set_output_embeddings(replacement)
    try:
        yield
    finally:
        base.set_output_embeddings(lm_head)


def trained_label_logits(
    model, inputs: dict, label_ids: list[int], unwrapped=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(label logits [N, len(label_ids)] in float32, class index [N]) of the N trained label tokens in a batch, in
    batch order (padded rows, or one padding-free row). `model` is what the trainer calls (possibly DDP-wrapped),
    `unwrapped` the model inside it (whose label head applies)."""
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
    with label_output(unwrapped, label_ids, (rows, columns - 1)):
        logits = model(**forward_inputs, use_cache=False).logits
    return logits.float(), match.int().argmax(dim=1)


def trained_position_logits(model, inputs, unwrapped=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits over the vocabulary (float32; the label columns through the label head when the model has one) at
    every position whose next token carries loss, [n, vocab], and those tokens [n]. The model computes logits only
    from the earliest such position on (`logits_to_keep`), not for the whole row."""
    unwrapped = unwrapped if unwrapped is not None else model
    labels = inputs["labels"]
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)
    width = labels.shape[1]
    keep = width - int(cols.min()) if len(cols) else 1
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    with label_output(unwrapped, [], vocab=True):
        logits = model(**model_inputs, logits_to_keep=keep, use_cache=False).logits
    return logits[rows, cols - (width - keep)].float(), labels[rows, cols + 1]
