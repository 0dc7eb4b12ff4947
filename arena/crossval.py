"""What a run folder's held-out rows say, and `--fold all`.

After a run scores its held-out fold (oof.csv), `assess` fits the calibration on those rows and stores it
(calibration.json), measures it honestly (cross-fitted), and draws the pictures. `--fold all` trains every fold in
turn into `fold-<k>/` run folders (a fold already finished is skipped), then `summarize` writes one oof.csv
covering every labelled row (with a `fold` column) and the CV metrics.json: log loss and accuracy per fold and
over all rows, before and after calibration, the subgroup table and the pictures of all rows.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from arena import pictures
from arena.calibration import Calibration, Prior, RowFlags, calibrate, cross_fit, measure
from arena.data import DataError
from arena.io import write_json
from arena.run import Predictions, read_predictions, write_predictions
from arena.scoring import log_loss, metrics

FOLD_METRICS = ("log_loss", "accuracy", "n", "bayes_limit", "train_loss", "train_seconds")


def assess(run: str, read: Predictions, priors: dict[str, Prior], seed: int) -> dict:
    """Calibration of a run's held-out rows (`read`: its oof.csv), saved in the run folder; returns the
    metrics.json entries (before / after, temperature, priors, subgroups) and writes the pictures."""
    labels = read.labels()
    calibration, report, after = calibrate(read.logits(), labels, RowFlags.of_predictions(read), priors, seed)
    calibration.save(run)
    report["subgroups"] = pictures.draw(run, read, read.probs, after, labels)
    return report


def fold_folder(run: str, fold: int) -> str:
    return os.path.join(run, f"fold-{fold}")


def fold_finished(folder: str, fold: int, folds: list[tuple[str, int]]) -> bool:
    """A fold's run folder is finished when its metrics.json (written last) is there for that fold; its folds.csv
    must then be this split's, or the folder is from other data or settings and the run stops."""
    try:
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
            done = json.load(f).get("fold") == fold
    except (OSError, ValueError):
        return False
    try:
        with open(os.path.join(folder, "folds.csv"), encoding="utf-8", newline="") as f:
            saved = [(row["id"], int(row["fold"])) for row in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        saved = None
    if saved != [(row_id, k) for row_id, k in folds]:
        raise DataError(f"{folder}: a finished fold of another split (its folds.csv is missing or differs from "
                        "this data's folds); give another --output_dir or remove it")
    return done


def summarize(run: str, n_folds: int, seed: int) -> dict:
    """Combines the finished folds of `run`: oof.csv, metrics.json and the pictures; returns the metrics."""
    folders = [fold_folder(run, k) for k in range(n_folds)]
    reads = [read_predictions(os.path.join(folder, "oof.csv")) for folder in folders]
    for read in reads[1:]:
        if list(read.columns) != list(reads[0].columns):
            raise DataError(f"{read.path}: not the same columns as {reads[0].path} (one fold scored with --tta?)")
    combined = Predictions(
        os.path.join(run, "oof.csv"),
        [i for read in reads for i in read.ids],
        np.concatenate([read.probs for read in reads]),
        {name: [v for read in reads for v in read.columns[name]] for name in reads[0].columns},
    )
    combined.columns["fold"] = [str(k) for k, read in enumerate(reads) for _ in read.ids]
    with open(os.path.join(folders[0], "folds.csv"), encoding="utf-8", newline="") as f:
        expected = sorted(row["id"] for row in csv.DictReader(f))
    if sorted(combined.ids) != expected:
        raise DataError(f"{run}: the folds' oof.csv files do not cover every labelled row exactly once")
    write_predictions(combined.path, combined.ids, combined.probs, combined.columns)

    per_fold, scaled, after = [], [], []
    has_priors = False
    for k, (folder, read) in enumerate(zip(folders, reads)):
        calibration = Calibration.load(folder) or Calibration()
        has_priors |= bool(calibration.priors)
        fold_scaled, fold_after = cross_fit(read.logits(), read.labels(), RowFlags.of_predictions(read),
                                            calibration.priors, seed)
        scaled.append(fold_scaled)
        after.append(fold_after)
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
            saved = json.load(f)
        per_fold.append({"fold": k, **{key: saved.get(key) for key in FOLD_METRICS},
                         "temperature": calibration.temperature, "log_loss_after": log_loss(fold_after, read.labels())})
    labels = combined.labels()
    scaled, after = np.concatenate(scaled), np.concatenate(after)
    result = {
        **metrics(combined.probs, labels),
        "n_folds": n_folds,
        "folds": per_fold,
        **measure(labels, RowFlags.of_predictions(combined), combined.probs, scaled, after if has_priors else None),
    }
    result["calibration"]["after"] = "each fold cross-fitted on two halves of its rows, then pooled"
    limits = [fold.get("bayes_limit") for fold in per_fold]
    if None not in limits:  # demo data: every fold knows its rows' best possible log loss
        result["bayes_limit"] = float(np.average(limits, weights=[fold["n"] for fold in per_fold]))
        result["gap"] = result["log_loss"] - result["bayes_limit"]
    result["subgroups"] = pictures.draw(run, combined, combined.probs, after, labels)
    write_json(os.path.join(run, "metrics.json"), result)
    return result

