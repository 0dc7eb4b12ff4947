"""`--label_head`: a trainable output of the label tokens' own, a scale and a bias on each label's logit.

With tied embeddings (Gemma-2) the label tokens' output rows are their input embeddings, which LoRA leaves frozen.
The label head adds two numbers per label, applied to the model's own logits (for Gemma-2, after its softcapping):
logit_k -> scale_k * logit_k + bias_k (scale 1, bias 0 at the start: the model as it was). The embeddings stay tied
and untouched. `LabelHead.forward` is the one place the transformation lives, applied by
`arena.label_logits.label_logits`, which training (either loss) and scoring share. The head is saved beside the
adapter (and in every checkpoint) as label_head.safetensors, and `infer.py --adapter` loads it from there.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save

from arena.errors import DataError
from arena.io import atomic_open
from arena.run_folder import LABEL_HEAD as FILE
from arena.run_folder import path


class LabelHead(torch.nn.Module):
    def __init__(self, label_ids: list[int]):
        super().__init__()
        self.register_buffer("label_ids", torch.tensor(label_ids, dtype=torch.long))
        self.scale = torch.nn.Parameter(torch.ones(len(label_ids)))
        self.bias = torch.nn.Parameter(torch.zeros(len(label_ids)))

    def forward(self, label_logits: torch.Tensor) -> torch.Tensor:
        """[..., labels] logits of the label tokens -> the same, transformed (float32)."""
        return label_logits.float() * self.scale + self.bias


def attach_label_head(model, label_ids: list[int]) -> LabelHead:
    """A new head (the identity) as the model's `label_head` submodule: its parameters train with the adapter's."""
    model.label_head = LabelHead(label_ids).to(next(model.parameters()).device)
    return model.label_head


def save_label_head(head: LabelHead, folder: str) -> None:
    with atomic_open(path(folder, FILE), "wb") as f:
        f.write(save({name: t.detach().cpu().contiguous() for name, t in head.state_dict().items()}))


def load_label_head(model, folder: str, label_ids: list[int], required: bool = False) -> LabelHead | None:
    """Attaches the head saved in `folder` in place of any the model has (None when there is none and none is
    `required`); its label tokens must be `label_ids`."""
    if "label_head" in model._modules:  # another ensemble member's
        del model.label_head
    file = path(folder, FILE)
    if not os.path.exists(file):
        if required:
            raise DataError(f"{file}: not found, but the run was trained with --label_head")
        return None
    saved = load_file(file)
    if saved["label_ids"].tolist() != list(label_ids):
        raise DataError(
            f"{file}: the label head was trained for label tokens {saved['label_ids'].tolist()}, "
            f"not {list(label_ids)}; score with the run's own --labels"
        )
    head = attach_label_head(model, label_ids)
    head.load_state_dict(saved)
    return head


def load_label_head_weights(head: LabelHead, folder: str) -> None:
    """The weights saved in `folder` (a checkpoint being resumed) into `head`."""
    head.load_state_dict(load_file(path(folder, FILE)))
