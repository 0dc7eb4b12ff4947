"""`--label_head`: a trainable output of the label tokens' own, a scale and a bias on each label's logit.

With tied embeddings (Gemma-2) the label tokens' output rows are their input embeddings, which LoRA leaves frozen.
The label head adds two numbers per label, applied to the model's own logits (for Gemma-2, after its softcapping):
logit_k -> scale_k * logit_k + bias_k (scale 1, bias 0 at the start: the model as it was). The embeddings stay tied
and untouched. `LabelHead.forward` is the one place the transformation lives: scoring applies it to the label
logits, and training to the label columns of the logits over the vocabulary (`--loss token`) or to the label
logits (`--loss label`): arena.losses.ArenaTrainer. The head is saved beside the adapter (and in every checkpoint) as
label_head.safetensors, and `infer.py --adapter` loads it from there.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save

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
    """Attaches the head saved in `folder` in place of any the model has (None when there is none and none is
    `required`); its label tokens must be `label_ids`."""
    if "label_head" in model._modules:  # another ensemble member's
        del model.label_head
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
