"""Ensembles and blends: combining members' probabilities, fitted weights, several adapters on one load of the
base (infer.py), and the blend tool's matching by id."""

import shutil

import numpy as np
import pytest

from arena.calibration import Calibration
from arena.data import DataError
from arena.ensemble import combine, fit_weights
from arena.predictions import read_predictions, write_predictions
from arena.scoring import probabilities
from conftest import check, run_cli

P = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
Q = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])


def test_combine_by_probabilities_or_log_probabilities():
    np.testing.assert_allclose(combine([P, Q], method="prob"), (P + Q) / 2, atol=1e-12)
    geometric = np.sqrt(P * Q)
    normalised = geometric / geometric.sum(1, keepdims=True)
    np.testing.assert_allclose(combine([P, Q], method="logprob"), normalised, atol=1e-12)
    np.testing.assert_allclose(combine([P, Q], [3, 1], "prob"), 0.75 * P + 0.25 * Q, atol=1e-12)
    for method in ("prob", "logprob"):
        np.testing.assert_allclose(combine([P, P], method=method), P, atol=1e-12)
    with pytest.raises(DataError, match="2 weights for 3"):
        combine([P, Q, P], [1, 2])


def test_fitted_weights_favour_the_better_member():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=500)
    good = np.full((500, 3), 0.1)
    good[np.arange(500), labels] = 0.8
    noise = rng.dirichlet([1, 1, 1], size=500)
    for method in ("prob", "logprob"):
        weights = fit_weights([noise, good], labels, method)
        assert weights.sum() == pytest.approx(1) and weights[1] > 0.9, (method, weights)


def test_two_identical_adapters_ensemble_to_one_on_one_load_of_the_base(trained_run, heldout_file, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(trained_run, twin, ignore=shutil.ignore_patterns("checkpoint-*"))
    out = tmp_path / "ensemble.csv"
    result = check(run_cli("infer.py", "--adapter", trained_run, "--adapter", twin, "--data_file", heldout_file,
                              "--output_file", out, "--combine", "logprob"))
    assert result.stdout.count("is a LoRA adapter; loading its base") == 1  # unsloth loaded the base once
    read = read_predictions(trained_run / "oof.csv")
    one = probabilities(read.logits(), Calibration.load(trained_run).temperature)  # what one adapter gives
    ensemble = read_predictions(out)
    by_id = dict(zip(ensemble.ids, ensemble.probs))
    np.testing.assert_allclose(np.stack([by_id[i] for i in read.ids]), one, atol=1e-5)


def blend(*args):
    return run_cli("tools/blend.py", *args)


def test_blend_tool_matches_rows_by_id(tmp_path):
    ids = ["a", "b", "c", "d"]
    labels = [0, 1, 2, 0]
    first = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4], [0.5, 0.3, 0.2]])
    second = np.array([[0.4, 0.4, 0.2], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]])
    order = [2, 0, 3, 1]  # the second files list the same rows in another order
    write_predictions(tmp_path / "oof1.csv", ids, first, {"label": labels})
    write_predictions(tmp_path / "oof2.csv", [ids[i] for i in order], second[order],
                      {"label": [labels[i] for i in order]})
    write_predictions(tmp_path / "sub1.csv", ids, first)
    write_predictions(tmp_path / "sub2.csv", [ids[i] for i in order], second[order])
    out = tmp_path / "blend.csv"
    result = check(blend("--oof", tmp_path / "oof1.csv", tmp_path / "oof2.csv", "--predictions",
                         tmp_path / "sub1.csv", tmp_path / "sub2.csv", "--output_file", out))
    weights = fit_weights([first, second], np.array(labels))
    assert f"weights {weights[0]:.3f}, {weights[1]:.3f}" in result.stdout
    blended = read_predictions(out)
    assert blended.ids == ids
    np.testing.assert_allclose(blended.probs, combine([first, second], weights), atol=1e-6)  # the default method
    check(blend("--predictions", tmp_path / "sub1.csv", tmp_path / "sub2.csv", "--weights", "1", "1",
                "--method", "prob", "--output_file", out))
    np.testing.assert_allclose(read_predictions(out).probs, (first + second) / 2, atol=1e-12)


def test_blend_tool_refuses_mismatched_ids(tmp_path):
    write_predictions(tmp_path / "one.csv", ["a", "b", "c"], np.full((3, 3), 1 / 3))
    write_predictions(tmp_path / "two.csv", ["a", "b", "x"], np.full((3, 3), 1 / 3))
    out = tmp_path / "blend.csv"
    result = blend("--predictions", tmp_path / "one.csv", tmp_path / "two.csv", "--output_file", out)
    assert result.returncode == 1 and not out.exists()
    message = result.stderr.strip()
    assert message.count("\n") == 0, message  # one line, no traceback
    assert message.startswith("error: ") and "two.csv: its ids do not match" in message
    assert "1 (e.g. c) missing" in message and "1 (e.g. x) not in" in message
