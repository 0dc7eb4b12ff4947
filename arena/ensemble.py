"""Ensembles: several runs' probabilities combined into one, and several adapters on one base model.

Two ways to combine (weights normalised to sum to one; equal by default):
- "prob": the weighted mean of the probabilities;
- "logprob": the weighted mean of the log-probabilities, renormalised (a weighted geometric mean).
Weights can be fitted on out-of-fold predictions (`fit_weights`, the log loss minimised with L-BFGS over the
simplex). Adapters of one base are loaded on one copy of it with peft's `load_adapter` and switched with
`set_adapter`, so the base is loaded once.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import torch

from arena.calibration import minimize, nll
from arena.errors import DataError
from arena.run_folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LABEL_HEAD, adapter_base, is_adapter, path

METHODS = ("prob", "logprob")
# better than "prob" on both seeds measured on the demo: docs/BENCHMARKS.md, "Calibration, priors and ensembles"
DEFAULT_METHOD = "logprob"


def _combine(probs: torch.Tensor, weights: torch.Tensor, method: str) -> torch.Tensor:
    """[members, n, labels] probabilities and [members] weights summing to one -> [n, labels]."""
    if method == "prob":
        return torch.einsum("m,mnk->nk", weights, probs)
    if method == "logprob":
        logs = probs.clamp_min(np.finfo(np.float64).eps).log()
        return torch.softmax(torch.einsum("m,mnk->nk", weights, logs), dim=-1)
    raise DataError(f"unknown way to combine {method!r}; choose one of {', '.join(METHODS)}")


def normalised_weights(weights: list[float] | None, members: int) -> np.ndarray:
    if weights is None or len(weights) == 0:
        return np.full(members, 1 / members)
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) != members:
        raise DataError(f"{len(weights)} weights for {members} predictions; give one weight each")
    if (weights < 0).any() or weights.sum() <= 0:
        raise DataError(f"weights must be non-negative and not all zero, got {weights.tolist()}")
    return weights / weights.sum()


def combine(probs: list[np.ndarray], weights: list[float] | None = None, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Several members' probabilities [n, labels] (rows in the same order) -> one [n, labels] array."""
    w = torch.from_numpy(normalised_weights(weights, len(probs)))
    return _combine(torch.from_numpy(np.stack(probs).astype(np.float64)), w, method).numpy()


def fit_weights(probs: list[np.ndarray], labels: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Weights on the simplex (a softmax of free parameters) minimising the log loss of the combination."""
    stacked, y = torch.from_numpy(np.stack(probs).astype(np.float64)), torch.from_numpy(np.asarray(labels))
    u = torch.zeros(len(probs), dtype=torch.float64, requires_grad=True)
    minimize(lambda: nll(_combine(stacked, torch.softmax(u, 0), method), y), [u])
    return torch.softmax(u.detach(), 0).numpy()


# ------------------------------------------------------------------------------------------------ adapters


def run_folders(paths: list[str]) -> list[str]:
    """Run folders, each with an adapter; a folder of `--fold all` (with fold-<k>/ inside) stands for its folds."""
    out = []
    for folder in paths:
        if is_adapter(folder):
            if not os.path.exists(path(folder, ADAPTER_WEIGHTS)):
                raise DataError(f"{folder}: {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}: not a complete run folder")
            out.append(folder)
            continue
        if os.path.exists(path(folder, LABEL_HEAD)):
            raise DataError(f"{folder}: a label head ({LABEL_HEAD}) but no adapter ({ADAPTER_CONFIG}); for a merged "
                            "export use --model, not --adapter")
        folds = sorted(glob.glob(path(folder, "fold-*", ADAPTER_CONFIG)))
        if not folds:
            raise DataError(f"{folder}: no adapter here (no adapter_config.json, and no fold-<k>/ folders with one)")
        out += [os.path.dirname(f) for f in sorted(folds, key=lambda f: int(f.split("fold-")[-1].split(os.sep)[0]))]
    return out


def by_base(runs: list[str]) -> list[list[int]]:
    """Indices of the runs grouped by base model, in order of first appearance: one load of the base per group."""
    groups: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(adapter_base(run), []).append(i)
    return list(groups.values())


def add_adapters(model, runs: list[str]) -> list[str]:
    """`model` is the first run loaded through unsloth (its base with that adapter, named "default"); loads the
    other runs' adapters next to it with peft's `load_adapter`. Returns the adapter name of each run."""
    names = [model.active_adapter]
    for i, run in enumerate(runs[1:], 1):
        names.append(f"member-{i}")
        model.load_adapter(run, adapter_name=names[-1], is_trainable=False)
    return names


# ------------------------------------------------------------------------------------------------ files by id


def aligned(reads: list) -> list[np.ndarray]:
    """The probabilities of several prediction files (`arena.predictions.read_predictions`), each in the first file's row
    order, matched by id; files whose ids differ stop with the ids that do not match."""
    first = reads[0]
    out = []
    for read in reads:
        position = {row_id: i for i, row_id in enumerate(read.ids)}
        if position.keys() != set(first.ids):
            missing = [i for i in first.ids if i not in position]
            extra = [i for i in read.ids if i not in set(first.ids)]
            raise DataError(f"{read.path}: its ids do not match {first.path}'s: {_some(missing)} missing, "
                            f"{_some(extra)} not in {first.path}")
        out.append(read.probs[[position[row_id] for row_id in first.ids]])
    return out


def _some(ids: list[str]) -> str:
    return f"{len(ids)} (e.g. {', '.join(ids[:3])})" if ids else "0"
