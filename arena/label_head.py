"""`--label_head`: a trainable output of the label tokens' own, a scale and a bias on each label's logit.

With tied embeddings (Gemma-2) the label tokens' output rows are their input embeddings, which LoRA leaves frozen.
The label head adds two numbers per label, applied to the model's own logits (for Gemma-2, after its softcapping):
logit_k -> scale_k * logit_k + bias_k (scale 1, bias 0 at the start: the model as it was). The embeddings stay tied
and untouched. `LabelHead.forward` is the one place the transformation lives: scoring applies it to the label
logits, and training to the label columns of the logits over the vocabulary (`LabelHeadTrainer`), so the token loss
is unchanged but for the head. The head is saved beside the adapter (and in every checkpoint) as
label_head.safetensors, and `infer.py --adapter` loads it from there.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from trl import SFTTrainer

from arena.data import DataError

FILE = "label_head.safetensors"


class LabelHead(torch.nn.Module):
    def __init__(self, label_ids: list[int]):
        super().__init__()
        self.register_buffer("label_ids", torch.tensor(label_ids, dtype=torch.long))
        self.scale = torch.nn.Parameter(torch.ones(len(label_ids)))
        self.bias = torch.nn.Parameter(torch.zeros(len(label_ids)))

    def forward(self, label_logits: torch.Tensor) -> torch.Tensor:
        """[..., labels] logits of the label tokens -> the same, transformed (float32)."""
        return label_logits.float() * self.scale + self.bias


def label_logits(model, logits: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """The label tokens' logits [..., labels] (float32) from logits over the vocabulary, through the model's label
    head when it has one."""
    return apply_label_head(model, logits.index_select(-1, label_ids))


def apply_label_head(model, label_logits: torch.Tensor) -> torch.Tensor:
    """[..., labels] logits of the label tokens, as the model outputs them (for Gemma-2, softcapped), through the
    model's label head when it has one (float32). What a loss over the label logits calls too."""
    head = getattr(model, "label_head", None)
    return head(label_logits) if head is not None else label_logits.float()


def attach_label_head(model, label_ids: list[int]) -> LabelHead:
    """A new head (the identity) as the model's `label_head` submodule: its parameters train with the adapter's."""
    model.label_head = LabelHead(label_ids).to(next(model.parameters()).device)
    return model.label_head


def save_label_head(head: LabelHead, folder: str) -> None:
    from arena.io import atomic_open

    with atomic_open(os.path.join(folder, FILE), "wb") as f:
        f.write(save({name: t.detach().cpu().contiguous() for name, t in head.state_dict().items()}))


def load_label_head(model, folder: str, label_ids: list[int], required: bool = False) -> LabelHead | None:
    """Attaches the head saved in `folder` (None when there is none and none is `required`); its label tokens must
    be `label_ids`."""
    path = os.path.join(folder, FILE)
    if not os.path.exists(path):
        if required:
            raise DataError(f"{path}: not found, but the run was trained with --label_head")
        return None
    saved = load_file(path)
    if saved["label_ids"].tolist() != list(label_ids):
        raise DataError(
            f"{path}: the label head was trained for label tokens {saved['label_ids'].tolist()}, "
            f"not {list(label_ids)}; score with the run's own --labels"
        )
    head = attach_label_head(model, label_ids)
    head.load_state_dict(saved)
    return head


class LabelHeadTrainer(SFTTrainer):
    """trl's SFTTrainer for a model with a label head: the loss is the same token loss (cross-entropy over the
    vocabulary at each trained position, normalised as trl does) with the head applied to the label columns; the
    head is saved with the adapter in every checkpoint and restored on resume."""

    def __init__(self, *args, **kwargs):
        # padded rows: the logits are computed from each batch's earliest trained position on, which for one
        # packed row (padding-free, as unsloth batches on GPU) would be nearly the whole row
        kwargs["args"].padding_free = False
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        head = self.model.label_head
        logits, targets = trained_position_logits(model, inputs)
        logits = logits.float().index_copy(-1, head.label_ids, head(logits.index_select(-1, head.label_ids)))
        loss = F.cross_entropy(logits, targets, reduction="sum")
        loss = loss / (num_items_in_batch if num_items_in_batch is not None else max(len(targets), 1))
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages the gradients, as in trl's compute_loss
        return (loss, {"logits": logits}) if return_outputs else loss

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        save_label_head(self.model.label_head, output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.model.label_head.load_state_dict(load_file(os.path.join(resume_from_checkpoint, FILE)))


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
