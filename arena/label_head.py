"""`--label_head`: the label logits from a [labels, hidden] linear layer of their own (weights and a bias) on the
hidden state that predicts the label, in place of the LM head's rows of the label tokens.

- `rows` (the bare flag): started from the LM head's rows of " A", " B", " Tie": an untied copy (with tied
  embeddings, as SmolLM2, Gemma and small Qwens have, LoRA alone never moves those rows, and training the tied
  rows through peft re-ties or drops them at merge: peft #2777, unsloth PR #9331).
- `scaled`: the same rows times a scale, with the scale and the bias fitted (least log loss) to a sample of the
  training rows before training: a calibration of the LM's own label logits (Zhao et al. 2021, arXiv 2102.09690)
  as the start. Where the rows carry little signal the scale comes out small and the start is near the class prior.
- `fresh`: a new classification head (weights drawn from N(0, the model's initializer_range), seeded): the
  competition winners' head, trained by the same trainer as the generation head.
- `none`: the LM head's own rows (the seed recipe).

`rows` and `fresh` start with a bias that makes the mean prediction over a sample of the training rows equal the
training labels' class frequencies (`prior_bias`): the LM's own label rows start far from them (SmolLM2 puts P(tie) at
0.0004 on LLMEval^2, where 23% are ties). The head is used through `arena.label_logits.label_output`, which puts
it in the model's output layer for one forward pass (Gemma-2's logit soft-capping still applies). It is saved
beside the adapter (and in every checkpoint) as label_head.safetensors with the base's vocabulary and hidden sizes,
and loaded from a run folder or a merged export by `load_label_head`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save

from arena.errors import DataError
from arena.io import atomic_open
from arena.run_folder import LABEL_HEAD as FILE
from arena.run_folder import path

HEADS = ("none", "rows", "scaled", "fresh")
PRIOR_ROWS = 64  # training rows scored to set the start bias (and scale)
BIAS_STEPS = 200  # fixed-point steps of `prior_bias`
SIZES = ("vocab_size", "hidden_size")  # of the base, saved with a head and checked on loading


def head_kind(value) -> str:
    """A --label_head setting as one of HEADS: a bare flag or `true` (also an older run's config.yaml) is `rows`,
    `false` is `none`."""
    kind = {True: "rows", False: "none", None: "none", "true": "rows", "false": "none", "": "none"}.get(
        value.lower() if isinstance(value, str) else value, value)
    if kind not in HEADS:
        raise DataError(f"--label_head must be one of {', '.join(HEADS)} (bare: rows), got {value!r}")
    return kind


class LabelHead(torch.nn.Module):
    """The label logits hidden @ weight.T + bias, in float32; `label_ids` are the tokens it stands in for."""

    def __init__(self, label_ids: list[int], weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("label_ids", torch.tensor(label_ids, dtype=torch.long, device=weight.device))
        self.weight = torch.nn.Parameter(weight.detach().float().clone())
        self.bias = torch.nn.Parameter(torch.zeros(len(label_ids), device=weight.device) if bias is None
                                       else bias.detach().float().clone())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden.to(self.weight.dtype), self.weight, self.bias)


def output_layer(model):
    """The model's output layer (its LM head), under peft's and DDP's wrappers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_output_embeddings()


def attach_label_head(model, label_ids: list[int], kind: str = "rows", seed: int = 0) -> LabelHead:
    """A new head as the model's `label_head` submodule (its parameters train with the adapter's): `rows` and
    `scaled`, the LM head's rows of `label_ids`; `fresh`, seeded random weights. The bias starts at zero (see
    `set_prior_bias` and `set_fitted_start`)."""
    lm_head = output_layer(model)
    ids = torch.as_tensor(label_ids, device=lm_head.weight.device)
    if kind in ("rows", "scaled"):
        weight = lm_head.weight.detach().index_select(0, ids).float()
    elif kind == "fresh":
        std = getattr(model.config, "initializer_range", 0.02) or 0.02
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(len(label_ids), lm_head.weight.shape[1], generator=generator) * std
    else:
        raise DataError(f"no label head to attach for --label_head {kind}")
    model.label_head = LabelHead(label_ids, weight.to(lm_head.weight.device))
    return model.label_head


def prior_bias(logits: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """The bias b [labels] for which the mean of softmax(logits + b) over the rows equals `frequencies` (a fixed
    point of b <- b + log f - log mean softmax(logits + b)), from [rows, labels] logits."""
    logits, target = torch.from_numpy(np.asarray(logits, np.float64)), torch.from_numpy(np.log(frequencies))
    bias = torch.zeros(logits.shape[1], dtype=torch.float64)
    for _ in range(BIAS_STEPS):
        bias += target - torch.softmax(logits + bias, -1).mean(0).log()
        bias -= bias.mean()
    return bias.numpy()


def set_prior_bias(head: LabelHead, logits: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """Sets the head's bias from its logits on a sample of training rows (with bias zero) and the training labels'
    class frequencies; returns the bias."""
    bias = prior_bias(logits, frequencies)
    with torch.no_grad():
        head.bias.copy_(torch.from_numpy(bias).float())
    return bias


def fitted_start(logits: np.ndarray, labels: np.ndarray, softcap: float | None = None) -> tuple[float, np.ndarray]:
    """The scale s and bias b [labels] of least mean log loss of softmax(s * z + b) over the rows, from their
    [rows, labels] logits and class indices; with a final logit soft-cap c the logits are c * tanh(z / c) and the
    fit is of c * tanh((s * z + b) / c)."""
    logits = torch.from_numpy(np.asarray(logits, np.float64))
    if softcap:
        logits = softcap * torch.atanh((logits / softcap).clamp(-1 + 1e-12, 1 - 1e-12))
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    scale = torch.ones(1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([scale, bias], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        z = scale * logits + bias
        value = F.cross_entropy(softcap * torch.tanh(z / softcap) if softcap else z, target)
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        return float(scale), (bias - bias.mean()).numpy()


def set_fitted_start(head: LabelHead, logits: np.ndarray, labels: np.ndarray, softcap: float | None = None):
    """Scales the head's weights and sets its bias by `fitted_start` on its logits (with bias zero) on a sample of
    training rows and their labels; returns (scale, bias)."""
    scale, bias = fitted_start(logits, labels, softcap)
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.copy_(torch.from_numpy(bias).float())
    return scale, bias


def save_label_head(head: LabelHead, folder: str, config) -> None:
    """label_head.safetensors: the head's tensors, with the base's vocabulary and hidden sizes as metadata."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in head.state_dict().items()}
    sizes = {key: str(getattr(config, key, None)) for key in SIZES}
    with atomic_open(path(folder, FILE), "wb") as f:
        f.write(save(tensors, metadata=sizes))


def read_label_head(file: str, config) -> dict[str, torch.Tensor]:
    """The tensors of a saved head, after checking that it was trained on a base of `config`'s vocabulary and hidden
    sizes. A head of an older version (a scale and a bias on the LM's label logits) is returned as it is."""
    try:
        with safe_open(file, "pt") as f:
            tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as e:  # a truncated or foreign file: safetensors' own error, in one line
        raise DataError(f"{file}: not a readable label head ({str(e).splitlines()[0]})") from None
    given = {key: str(getattr(config, key, None)) for key in SIZES}
    saved = {key: meta.get(key, given[key]) for key in given}  # an older head's file has no sizes: not checked
    if saved != given:
        raise DataError(f"{file}: the label head was trained on a base with vocab_size {saved['vocab_size']} and "
                        f"hidden_size {saved['hidden_size']}; this base has vocab_size {given['vocab_size']} and "
                        f"hidden_size {given['hidden_size']}")
    return tensors


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
    saved = read_label_head(file, model.config)
    if saved["label_ids"].tolist() != list(label_ids):
        raise DataError(
            f"{file}: the label head was trained for label tokens {saved['label_ids'].tolist()}, "
            f"not {list(label_ids)}; score with the run's own --labels"
        )
    device = output_layer(model).weight.device
    if "scale" in saved:  # an older version's head: scale * (LM rows . h) + bias is the rows head scale * rows
        if getattr(model.config, "final_logit_softcapping", None):
            raise DataError(f"{file}: a label head of an older version (a scale and a bias) on a model with logit "
                            "soft-capping cannot be converted; train the run again")
        head = attach_label_head(model, label_ids, "rows")
        with torch.no_grad():
            head.weight.mul_(saved["scale"].to(device).unsqueeze(1))
            head.bias.copy_(saved["bias"])
        return head
    head = LabelHead(label_ids, saved["weight"].to(device), saved["bias"].to(device))
    model.label_head = head
    return head


def load_label_head_weights(head: LabelHead, folder: str, config) -> None:
    """The weights saved in `folder` (a checkpoint being resumed) into `head`."""
    head.load_state_dict(read_label_head(path(folder, FILE), config))
