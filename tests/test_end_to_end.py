"""The whole product on the tiny model: train, same-model scoring of the held-out fold, infer.py with the adapter,
zero-shot scoring, and a model that really learns the demo signal."""

import csv
import json

import numpy as np
import pytest

from arena.data import LABEL_COLUMNS
from conftest import check, run_script

UNIFORM_LOG_LOSS = 1.0986


def read_predictions(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["id"]: np.array([float(r[c]) for c in LABEL_COLUMNS]) for r in rows}, rows


def test_training_writes_the_run_folder(trained_run):
    for name in ("adapter_model.safetensors", "adapter_config.json", "config.yaml", "prompt.txt", "folds.csv",
                 "oof.csv", "metrics.json", "versions.json"):
        assert (trained_run / name).exists(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["fold"] == 0
    versions = json.loads((trained_run / "versions.json").read_text())
    assert {"torch", "unsloth", "trl", "transformers", "peft", "bitsandbytes", "git_commit"} <= set(versions)


def test_the_tiny_model_learns_the_demo_signal(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    # a pipeline bug (wrong label token, wrong position, labels shuffled) leaves this near 1.0986
    assert metrics["log_loss"] < 0.8, metrics
    assert metrics["accuracy"] > 0.6, metrics


def write_heldout(run, data, path):
    """The rows of a run's held-out fold 0, as their own labelled file at `path`; checks they are oof.csv's."""
    with open(run / "folds.csv") as f:
        held_out = {r["id"] for r in csv.DictReader(f) if r["fold"] == "0"}
    assert set(read_predictions(run / "oof.csv")[0]) == held_out
    with open(data, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["id"] in held_out]
        header = reader.fieldnames
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_infer_with_the_adapter_reproduces_same_model_scoring(trained_run, demo_data, tmp_path):
    oof, _ = read_predictions(trained_run / "oof.csv")
    data = write_heldout(trained_run, demo_data / "train.csv", tmp_path / "heldout.csv")
    out = tmp_path / "pred" / "submission.csv"
    result = check(run_script("infer.py", "--adapter", trained_run, "--data_file", data, "--output_file", out))
    predictions, raw = read_predictions(out)
    assert list(raw[0]) == ["id", *LABEL_COLUMNS]
    for row_id, probs in predictions.items():
        np.testing.assert_allclose(probs, oof[row_id], atol=1e-5)  # same prompts, same scores
    metrics = json.loads((out.parent / "metrics.json").read_text())
    train_metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["log_loss"] == pytest.approx(train_metrics["log_loss"], abs=1e-5)
    assert f"log loss {metrics['log_loss']:.4f}" in result.stdout


def test_infer_on_unlabelled_test_file_with_tta(trained_run, demo_data, tmp_path):
    out = tmp_path / "submission.csv"
    check(run_script("infer.py", "--adapter", trained_run, "--data_file", demo_data / "test.csv",
                     "--output_file", out, "--tta"))
    predictions, _ = read_predictions(out)
    assert len(predictions) == 60
    probs = np.stack(list(predictions.values()))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert not (tmp_path / "metrics.json").exists()  # no labels, no metrics


def test_zero_shot_scoring_with_the_base_model(tiny_model, demo_data, tmp_path):
    out = tmp_path / "zero_shot.csv"
    result = check(run_script("infer.py", "--model", tiny_model, "--data_file", demo_data / "train.csv",
                              "--output_file", out, "--max_length", "512"))
    predictions, _ = read_predictions(out)
    assert len(predictions) == 1500
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] == 1500 and metrics["log_loss"] > 0.9  # an untrained model knows nothing
    assert "log loss" in result.stdout
