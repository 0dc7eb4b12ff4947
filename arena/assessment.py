"""A run's figures: the metrics of its probabilities against the labels, the demo's Bayes limit, and the one
function that computes, prints and writes them (`write_metrics`: train_unsloth.py's held-out fold, --fold all's CV
summary, infer.py on labelled data); and `assess`, the calibration and the pictures of held-out rows kept in
memory (`arena.predictions.Heldout`).
"""

from __future__ import annotations

import os

import numpy as np

from arena import pictures
from arena.calibration import Prior, calibrate
from arena.data import Pair
from arena.io import write_json
from arena.predictions import Heldout, read_predictions
from arena.scoring import metrics

TRUTH_FILE = "truth.csv"  # the demo's true probabilities, beside its data (data/make_demo_data.py)


def add_bayes_limit(result: dict, pairs: list[Pair]) -> None:
    """On data with a truth.csv beside it (the demo): adds `bayes_limit`, the best log loss possible on `pairs` (the
    mean entropy of their true distributions), and `gap` (log_loss - bayes_limit) to `result`."""
    truths = {}
    for source in sorted({p.source for p in pairs}):
        path = os.path.join(os.path.dirname(source), TRUTH_FILE)
        if not os.path.exists(path):
            return
        truths.update(read_predictions(path).by_id())
    if not pairs or any(p.id not in truths for p in pairs):
        return
    p = np.stack([truths[pair.id] for pair in pairs])
    result["bayes_limit"] = float(-np.mean(np.sum(p * np.log(np.where(p > 0, p, 1)), axis=1)))
    result["gap"] = result["log_loss"] - result["bayes_limit"]


def write_metrics(
    path: str, probs: np.ndarray, labels: np.ndarray, extra: dict, pairs: list[Pair] | None = None,
    title: str = "", where: str | None = None, log=print,
) -> dict:
    """The metrics of `probs` against `labels` (log loss, accuracy, n) with `extra`, and on demo data the Bayes
    limit and the gap (that of `pairs`, from the truth.csv beside their data; or `extra`'s own `bayes_limit`),
    written to `path` (metrics.json) and printed as one line:
    `<title>log loss L (Bayes limit B, gap G) (C calibrated, temperature T), accuracy A, n N  (<where>)`.
    Returns them."""
    result = {**metrics(probs, labels), **extra}
    if pairs is not None:
        add_bayes_limit(result, pairs)
    elif "bayes_limit" in result:
        result["gap"] = result["log_loss"] - result["bayes_limit"]
    write_json(path, result)
    bayes = f" (Bayes limit {result['bayes_limit']:.4f}, gap {result['gap']:.4f})" if "bayes_limit" in result else ""
    calibration = result.get("calibration", {})
    calibrated = ""
    if "log_loss_after" in calibration:
        temperature = f", temperature {calibration['temperature']:.3f}" if "temperature" in calibration else ""
        calibrated = f" ({calibration['log_loss_after']:.4f} calibrated{temperature})"
    log(f"{title}log loss {result['log_loss']:.4f}{bayes}{calibrated}, accuracy {result['accuracy']:.3f}, "
        f"n {result['n']}  ({where or path})")
    return result


def assess(run: str, heldout: Heldout, priors: dict[str, Prior], seed: int) -> dict:
    """Calibration of a run's held-out rows, saved in the run folder (calibration.json); returns the metrics.json
    entries (before / after, temperature, priors, subgroups) and draws the pictures."""
    calibration, report, after = calibrate(heldout.logits, heldout.labels, heldout.flags, priors, seed)
    calibration.save(run)
    report["subgroups"] = pictures.draw(run, heldout.facts, heldout.probs, after, heldout.labels)
    return report
