"""--fold all on the tiny model with tiny settings (2 folds, 10 steps, 160 rows): every labelled row in the combined
oof.csv exactly once, the CV metrics, a second run skipping the finished folds, and infer.py on the folder."""

import csv
import json

import numpy as np
import pytest

from arena.crossval import fold_finished
from arena.data import DataError
from arena.predictions import read_predictions
from arena.scoring import log_loss
from conftest import check, run_cli

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`


@pytest.fixture(scope="module")
def small_file(demo_data, tmp_path_factory):
    with open(demo_data / "train.csv", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    folder = tmp_path_factory.mktemp("small")
    (folder / "truth.csv").write_bytes((demo_data / "truth.csv").read_bytes())  # the demo's true probabilities
    path = folder / "small.csv"
    path.write_text("".join(lines[:161]))
    return path


def test_fold_all_covers_every_row_once_and_skips_finished_folds(tiny_model, small_file, tmp_path):
    run = tmp_path / "cv"
    args = ["train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model, "--train_file", small_file,
            "--fold", "all", "--n_folds", "2", "--max_steps", "10", "--output_dir", run, "--degenerate_priors"]
    first = check(run_cli(*args))
    assert "fold 0 of 2: training" in first.stdout and "fold 1 of 2: training" in first.stdout
    with open(run / "fold-0" / "folds.csv") as f:
        folds = {r["id"]: r["fold"] for r in csv.DictReader(f)}
    oof = read_predictions(run / "oof.csv")
    assert sorted(oof.ids) == sorted(folds) and len(set(oof.ids)) == len(oof.ids)  # every row, once
    assert dict(zip(oof.ids, oof.columns["fold"])) == folds  # each row scored by the model that held it out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == len(folds) and [f["fold"] for f in metrics["folds"]] == [0, 1]
    assert metrics["log_loss"] == pytest.approx(log_loss(oof.probs, oof.labels()), abs=1e-12)
    for k in (0, 1):
        fold = json.loads((run / f"fold-{k}" / "metrics.json").read_text())
        assert metrics["folds"][k]["log_loss"] == fold["log_loss"]
        assert fold["calibration"]["log_loss_after"] == pytest.approx(metrics["folds"][k]["log_loss_after"])
    # the Bayes limit of all rows: the folds' own, weighted by their rows
    limits = [(json.loads((run / f"fold-{k}" / "metrics.json").read_text())["bayes_limit"], metrics["folds"][k]["n"])
              for k in (0, 1)]
    assert metrics["bayes_limit"] == pytest.approx(sum(b * n for b, n in limits) / metrics["n"], abs=1e-12)
    assert f"Bayes limit {metrics['bayes_limit']:.4f}" in first.stdout
    assert {row["group"] for row in metrics["subgroups"]} >= {"1 turn", "2+ turns", "one_empty", "identical"}
    for name in ("reliability.png", "confusion.png", "subgroups.png"):
        assert (run / name).exists(), name
    adapters = {k: (run / f"fold-{k}" / "adapter_model.safetensors").stat().st_mtime_ns for k in (0, 1)}

    second = check(run_cli(*args))
    assert "fold 0: finished" in second.stdout and "fold 1: finished" in second.stdout
    assert "training into" not in second.stdout
    assert adapters == {k: (run / f"fold-{k}" / "adapter_model.safetensors").stat().st_mtime_ns for k in (0, 1)}
    assert json.loads((run / "metrics.json").read_text())["log_loss"] == metrics["log_loss"]

    # the --fold all folder as an ensemble of its fold models
    out = tmp_path / "pred" / "submission.csv"
    check(run_cli("infer.py", "--adapter", run, "--data_file", small_file, "--output_file", out))
    members = json.loads((out.parent / "metrics.json").read_text())["members"]
    assert [m["adapter"] for m in members] == [str(run / "fold-0"), str(run / "fold-1")]
    assert np.isfinite([m["log_loss"] for m in members]).all()


def test_a_finished_fold_of_another_split_stops_the_run(tmp_path):
    folder = tmp_path / "fold-0"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"fold": 0}))
    (folder / "folds.csv").write_text("id,fold\n1,0\n2,1\n")
    assert fold_finished(folder, 0, [("1", 0), ("2", 1)])
    assert not fold_finished(tmp_path / "fold-1", 1, [("1", 0), ("2", 1)])  # never started
    with pytest.raises(DataError, match="another split"):
        fold_finished(folder, 0, [("1", 1), ("2", 0)])
