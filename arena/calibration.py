"""Calibration of a run's probabilities, fitted on held-out rows, stored in the run folder (calibration.json) and
applied by infer.py:

- one temperature on the label logits (probabilities = softmax(logits / T)), fitted by minimising log loss;
- optional priors for degenerate battles (`one_empty`, `identical`): the label distribution of the training rows
  with that flag, blended into the model's probabilities of the flagged rows with a weight fitted on held-out rows.

Every fit is torch's L-BFGS on the log loss. The honest figure for "after" comes from cross-fitting: the held-out
rows are split in two halves, and each half is calibrated with what was fitted on the other.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from arena import run_folder
from arena.data import Pair
from arena.io import write_json
from arena.scoring import log_loss, probabilities
from arena.swap import label_order, swap_columns

FLAGS = ("one_empty", "identical")
MAX_TEMPERATURE = 100.0


def minimize(loss, params: list[torch.Tensor], max_iter: int = 200) -> None:
    """torch's L-BFGS with a strong-Wolfe line search on `loss()`, updating `params` in place."""
    optimizer = torch.optim.LBFGS(
        params, lr=1, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12
    )

    def closure():
        optimizer.zero_grad()
        value = loss()
        value.backward()
        return value

    optimizer.step(closure)


def nll(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the labels, clipped as `arena.scoring.log_loss` clips."""
    return -probs.gather(1, labels[:, None]).clamp_min(np.finfo(np.float64).eps).log().mean()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the log loss of `probabilities(logits, T)` ([n, views, labels] logits), kept
    within [1/MAX_TEMPERATURE, MAX_TEMPERATURE] (a model that knows nothing drives T towards infinity)."""
    x, y = torch.from_numpy(np.asarray(logits, dtype=np.float64)), torch.from_numpy(np.asarray(labels))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    minimize(lambda: nll(torch.softmax(x / log_t.exp(), -1).mean(1), y), [log_t])
    return float(np.clip(log_t.detach().exp().item(), 1 / MAX_TEMPERATURE, MAX_TEMPERATURE))


@dataclass
class RowFlags:
    """What the priors need to know of each row: which answer is empty (`Pair.empty_side`) and `identical`."""

    empty_side: np.ndarray  # int: 0 A's answer empty, 1 B's, -1 neither
    identical: np.ndarray  # bool

    @classmethod
    def of_pairs(cls, pairs: list[Pair]) -> RowFlags:
        empty_side = np.array([p.empty_side for p in pairs], dtype=int)
        return cls(empty_side, np.array([p.identical for p in pairs], dtype=bool))

    def subset(self, rows: np.ndarray) -> RowFlags:
        return RowFlags(self.empty_side[rows], self.identical[rows])

    def mask(self, flag: str) -> np.ndarray:
        return self.empty_side >= 0 if flag == "one_empty" else self.identical


@dataclass
class Prior:
    """The label distribution of the training rows with a flag (for `one_empty`: as if A's answer were the empty
    one), and its blend weight, fitted on held-out rows."""

    probs: list[float]
    train_rows: int
    weight: float = 0.0
    fit_rows: int = 0

    def per_row(self, flags: RowFlags, flag: str) -> np.ndarray:
        """The prior of every row [n, labels], turned to B's side where B's answer is the empty one."""
        probs = np.tile(np.array(self.probs), (len(flags.identical), 1))
        if flag == "one_empty":
            b_empty = flags.empty_side == 1
            probs[b_empty] = swap_columns(probs[b_empty])
        return probs


def learn_priors(labels: np.ndarray, flags: RowFlags, n_labels: int) -> dict[str, Prior]:
    """Priors from the training rows' labels for each flag that some training row has: label counts plus one
    (Laplace), normalised. `identical` is made symmetric in A and B; a B-empty row counts with its labels swapped."""
    priors = {}
    swap = np.array(label_order(n_labels))
    for flag in FLAGS:
        rows = flags.mask(flag)
        if not rows.any():
            continue
        oriented = labels[rows]
        if flag == "one_empty":
            oriented = np.where(flags.empty_side[rows] == 1, swap[oriented], oriented)
        counts = np.bincount(oriented, minlength=n_labels) + 1.0
        if flag == "identical":
            counts = (counts + counts[swap]) / 2
        priors[flag] = Prior((counts / counts.sum()).tolist(), int(rows.sum()))
    return priors


def fit_prior_weight(probs: np.ndarray, prior: np.ndarray, labels: np.ndarray) -> float:
    """The weight w in [0, 1] minimising the log loss of (1 - w) * probs + w * prior (w = sigmoid of the fitted
    parameter)."""
    p, q, y = (torch.from_numpy(np.asarray(a)) for a in (probs, prior, labels))
    u = torch.zeros((), dtype=torch.float64, requires_grad=True)
    minimize(lambda: nll((1 - u.sigmoid()) * p + u.sigmoid() * q, y), [u])
    return u.detach().sigmoid().item()


@dataclass
class Calibration:
    """What infer.py applies to a run's label logits: a temperature, then the priors of flagged rows."""

    temperature: float = 1.0
    priors: dict[str, Prior] = field(default_factory=dict)

    def apply(self, logits: np.ndarray, flags: RowFlags, temperature: float | None = None) -> np.ndarray:
        """Probabilities [n, labels] of [n, views, labels] logits; `temperature` overrides the fitted one."""
        probs = probabilities(logits, self.temperature if temperature is None else temperature)
        return self.with_priors(probs, flags)

    def with_priors(self, probs: np.ndarray, flags: RowFlags) -> np.ndarray:
        probs = probs.copy()
        for flag, prior in self.priors.items():
            rows = flags.mask(flag)
            probs[rows] = (1 - prior.weight) * probs[rows] + prior.weight * prior.per_row(flags, flag)[rows]
        return probs

    def save(self, folder: str) -> None:
        write_json(run_folder.path(folder, run_folder.CALIBRATION), asdict(self))

    @classmethod
    def load(cls, folder: str) -> Calibration | None:
        """The run folder's calibration, or None when it has none (runs trained before calibration existed)."""
        path = run_folder.path(folder, run_folder.CALIBRATION)
        if not os.path.exists(path):
            return None
        saved = run_folder.read_json(path)
        return cls(saved["temperature"], {name: Prior(**prior) for name, prior in saved["priors"].items()})


def fit_calibration(logits: np.ndarray, labels: np.ndarray, flags: RowFlags, priors: dict[str, Prior]) -> Calibration:
    """The temperature fitted on these rows, then each prior's weight fitted on these rows' flagged ones (weight 0
    where none has the flag)."""
    temperature = fit_temperature(logits, labels)
    probs = probabilities(logits, temperature)
    fitted = {}
    for flag, prior in priors.items():
        rows = flags.mask(flag)
        weight = fit_prior_weight(probs[rows], prior.per_row(flags, flag)[rows], labels[rows]) if rows.any() else 0.0
        fitted[flag] = replace(prior, weight=weight, fit_rows=int(rows.sum()))
    return Calibration(temperature, fitted)


def cross_fit(
    logits: np.ndarray, labels: np.ndarray, flags: RowFlags, priors: dict[str, Prior], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Honest calibrated probabilities of held-out rows: the rows are split in two random halves (seeded) and
    each half is calibrated with what was fitted on the other. Returns (temperature only, temperature and priors)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    scaled, with_priors = probabilities(logits), probabilities(logits)
    if min(map(len, halves)) == 0:
        return scaled, with_priors  # nothing to fit on
    for fit, use in (halves, halves[::-1]):
        calibration = fit_calibration(logits[fit], labels[fit], flags.subset(fit), priors)
        scaled[use] = probabilities(logits[use], calibration.temperature)
        with_priors[use] = calibration.with_priors(scaled[use], flags.subset(use))
    return scaled, with_priors


def measure(labels: np.ndarray, flags: RowFlags, raw: np.ndarray, scaled: np.ndarray,
            with_priors: np.ndarray | None = None) -> dict:
    """metrics.json's before/after figures: raw vs the cross-fitted temperature, and with priors, the cross-fitted
    temperature vs temperature and priors (overall and on each flag's rows)."""
    out = {"calibration": {
        "log_loss_before": log_loss(raw, labels),
        "log_loss_after": log_loss(scaled, labels),
        "after": "cross-fitted: each half of the held-out rows with the temperature fitted on the other half",
    }}
    if with_priors is not None:
        out["priors"] = {
            "log_loss_before": log_loss(scaled, labels),
            "log_loss_after": log_loss(with_priors, labels),
            "after": "cross-fitted, after the temperature: weights fitted on the other half's flagged rows",
        }
        for flag in FLAGS:
            rows = flags.mask(flag)
            out["priors"][flag] = {
                "heldout_rows": int(rows.sum()),
                "log_loss_before": log_loss(scaled[rows], labels[rows]) if rows.any() else None,
                "log_loss_after": log_loss(with_priors[rows], labels[rows]) if rows.any() else None,
            }
    return out


def calibrate(
    logits: np.ndarray, labels: np.ndarray, flags: RowFlags, priors: dict[str, Prior], seed: int
) -> tuple[Calibration, dict, np.ndarray]:
    """Fits the calibration on all these held-out rows (what infer.py will apply) and measures it honestly by
    cross-fitting (`seed` draws the halves). Returns the calibration, the metrics.json entries and the
    cross-fitted probabilities (temperature, then priors when there are any)."""
    calibration = fit_calibration(logits, labels, flags, priors)
    scaled, with_priors = cross_fit(logits, labels, flags, priors, seed)
    report = measure(labels, flags, probabilities(logits), scaled, with_priors if priors else None)
    report["calibration"]["temperature"] = calibration.temperature
    for flag, prior in calibration.priors.items():
        report["priors"][flag].update(asdict(prior))
    return calibration, report, with_priors
