"""`--fold all`: every fold in turn into `fold-<k>/` run folders (a fold already finished is skipped), then
`summarize` writes one oof.csv covering every labelled row (with a `fold` column) and the CV metrics.json: log loss
and accuracy per fold and over all rows, before and after calibration, the subgroup table and the pictures of all
rows. A run's own held-out assessment (calibration.json, pictures) is `arena.assessment.assess`.
"""

from __future__ import annotations

import numpy as np

from arena import pictures
from arena.assessment import write_metrics
from arena.calibration import Calibration, cross_fit, measure
from arena.errors import DataError
from arena.predictions import Heldout, read_predictions
from arena.run_folder import OOF, METRICS, fold_folder, path, read_folds, read_metrics
from arena.scoring import log_loss

FOLD_METRICS = ("log_loss", "accuracy", "n", "bayes_limit", "train_loss", "train_seconds")


def fold_finished(folder: str, fold: int, folds: list[tuple[str, int]]) -> bool:
    """A fold's run folder is finished when its metrics.json (written last) is there for that fold; its folds.csv
    must then be this split's, or the folder is from other data or settings and the run stops."""
    saved_metrics = read_metrics(folder)
    if saved_metrics is None:
        return False
    done = saved_metrics.get("fold") == fold
    if read_folds(folder) != [(row_id, k) for row_id, k in folds]:
        raise DataError(f"{folder}: a finished fold of another split (its folds.csv is missing or differs from "
                        "this data's folds); give another --output_dir or remove it")
    return done


def summarize(run: str, n_folds: int, seed: int, log=print) -> dict:
    """Combines the finished folds of `run`: oof.csv, metrics.json and the pictures; prints the CV line and returns
    the metrics. The folds' oof.csv files are read back here: earlier processes may have trained them."""
    folders = [fold_folder(run, k) for k in range(n_folds)]
    reads = [read_predictions(path(folder, OOF)) for folder in folders]
    for read in reads[1:]:
        if list(read.columns) != list(reads[0].columns):
            raise DataError(f"{read.path}: not the same columns as {reads[0].path} (one fold scored with --tta?)")
    folds = [Heldout.of_predictions(read) for read in reads]
    combined = Heldout.concat(folds)
    if sorted(combined.ids) != sorted(row_id for row_id, _ in read_folds(folders[0]) or []):
        raise DataError(f"{run}: the folds' oof.csv files do not cover every labelled row exactly once")
    combined.write(path(run, OOF), {"fold": [str(k) for k, fold in enumerate(folds) for _ in fold.ids]})

    per_fold, scaled, after = [], [], []
    has_priors = False
    for k, (folder, fold) in enumerate(zip(folders, folds)):
        calibration = Calibration.load(folder) or Calibration()
        has_priors |= bool(calibration.priors)
        fold_scaled, fold_after = cross_fit(fold.logits, fold.labels, fold.flags, calibration.priors, seed)
        scaled.append(fold_scaled)
        after.append(fold_after)
        saved = read_metrics(folder) or {}
        per_fold.append({"fold": k, **{key: saved.get(key) for key in FOLD_METRICS},
                         "temperature": calibration.temperature, "log_loss_after": log_loss(fold_after, fold.labels)})
    labels = combined.labels
    scaled, after = np.concatenate(scaled), np.concatenate(after)
    result = {
        "n_folds": n_folds,
        "folds": per_fold,
        **measure(labels, combined.flags, combined.probs, scaled, after if has_priors else None),
    }
    result["calibration"]["after"] = "each fold cross-fitted on two halves of its rows, then pooled"
    limits = [fold.get("bayes_limit") for fold in per_fold]
    if None not in limits:  # demo data: every fold knows its rows' best possible log loss
        result["bayes_limit"] = float(np.average(limits, weights=[fold["n"] for fold in per_fold]))
    result["subgroups"] = pictures.draw(run, combined.facts, combined.probs, after, labels)
    return write_metrics(path(run, METRICS), combined.probs, labels, result, title=f"CV over {n_folds} folds: ",
                         where=f"{path(run, METRICS)}, {OOF}", log=log)
