"""Calibration: the temperature fit, the priors for degenerate battles, cross-fitting, the calibration file, and
infer.py applying a run's stored calibration (on the tiny model's real run)."""

import json
import shutil

import numpy as np
import pytest

from arena.calibration import (
    Calibration, Prior, RowFlags, cross_fit, fit_calibration, fit_prior_weight, fit_temperature, learn_priors,
)
from arena.predictions import read_predictions
from arena.scoring import log_loss, probabilities
from conftest import check, run_cli


def sampled(rng, n, scale):
    """Labels drawn from softmax(z) for random logits z, and the logits z * scale ([n, 1, 3])."""
    z = rng.normal(0, 1.5, size=(n, 1, 3))
    p = probabilities(z)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return z * scale, labels


def test_fitted_temperature_undoes_a_known_overconfidence():
    logits, labels = sampled(np.random.default_rng(0), 4000, scale=3.0)  # three times too confident
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert log_loss(probabilities(logits, temperature), labels) < log_loss(probabilities(logits), labels) - 0.1


def test_temperature_lowers_heldout_log_loss_of_an_overconfident_model(trained_run):
    """The tiny model's held-out label logits, times 4: the same model with its output layer scaled up (label
    logits are linear in it), i.e. deliberately over-confident. Fitted on one half, scored on the other."""
    read = read_predictions(trained_run / "oof.csv")
    logits, labels = read.logits(), read.labels()
    order = np.random.default_rng(0).permutation(len(labels))
    fit, held = order[: len(order) // 2], order[len(order) // 2 :]
    overconfident = 4 * logits
    temperature = fit_temperature(overconfident[fit], labels[fit])
    before = log_loss(probabilities(overconfident[held]), labels[held])
    after = log_loss(probabilities(overconfident[held], temperature), labels[held])
    assert after < before - 0.05, (before, after)
    # scaling the logits scales the best temperature by the same factor
    assert temperature == pytest.approx(4 * fit_temperature(logits[fit], labels[fit]), rel=1e-4)


def flags_of(empty_side, identical):
    return RowFlags(np.array(empty_side), np.array(identical, dtype=bool))


def test_priors_are_learned_from_training_labels_per_flag():
    #            A empty, B empty, B empty, identical, identical, plain
    flags = flags_of([0, 1, 1, -1, -1, -1], [False, False, False, True, True, False])
    labels = np.array([1, 0, 2, 2, 2, 0])
    priors = learn_priors(labels, flags, 3)
    # one_empty, oriented as if A's answer were empty: B wins (A empty, B won), B wins (B empty, A won, swapped),
    # tie; plus one for each class
    assert priors["one_empty"].probs == pytest.approx([1 / 6, 3 / 6, 2 / 6])
    assert priors["one_empty"].train_rows == 3
    # identical: two ties plus one each, made symmetric in A and B
    assert priors["identical"].probs == pytest.approx([1 / 5, 1 / 5, 3 / 5])
    per_row = priors["one_empty"].per_row(flags, "one_empty")
    np.testing.assert_allclose(per_row[0], [1 / 6, 3 / 6, 2 / 6])  # A empty: as learned
    np.testing.assert_allclose(per_row[1], [3 / 6, 1 / 6, 2 / 6])  # B empty: turned to B's side
    assert "one_empty" not in learn_priors(labels[3:], flags.subset(np.arange(3, 6)), 3)  # no such training rows


def test_prior_weight_follows_how_good_the_prior_is():
    rng = np.random.default_rng(1)
    labels = np.full(200, 2)  # every flagged row is a tie
    model = rng.dirichlet([1, 1, 1], size=200)  # the model has no idea
    right, wrong = np.tile([0.05, 0.05, 0.9], (200, 1)), np.tile([0.45, 0.45, 0.1], (200, 1))
    assert fit_prior_weight(model, right, labels) > 0.8
    assert fit_prior_weight(model, wrong, labels) < 0.05


def test_calibration_file_round_trip_and_cross_fitting_is_honest(tmp_path):
    rng = np.random.default_rng(2)
    logits, labels = sampled(rng, 600, scale=2.5)
    flags = flags_of([-1] * 600, [i < 60 for i in range(600)])
    labels[:60] = 2  # identical answers: a tie
    priors = learn_priors(np.full(30, 2), flags_of([-1] * 30, [True] * 30), 3)
    calibration = fit_calibration(logits, labels, flags, priors)
    calibration.save(tmp_path)
    loaded = Calibration.load(tmp_path)
    assert loaded == calibration and loaded.priors["identical"].weight > 0.5
    np.testing.assert_allclose(loaded.apply(logits, flags), calibration.apply(logits, flags), atol=0)
    assert Calibration.load(tmp_path / "nothing") is None
    scaled, with_priors = cross_fit(logits, labels, flags, priors, seed=0)
    # each half is calibrated with what the other half gave: not the in-sample fit
    in_sample = calibration.apply(logits, flags)
    assert np.abs(with_priors - in_sample).max() > 1e-4
    raw = log_loss(probabilities(logits), labels)
    assert log_loss(with_priors, labels) < log_loss(scaled, labels) < raw


def test_calibration_apply_with_a_given_temperature_and_no_priors():
    logits = np.array([[[2.0, 0.0, -1.0]], [[0.0, 1.0, 0.0]]])
    flags = flags_of([-1, 0], [True, False])
    calibration = Calibration(2.0, {"identical": Prior([0.2, 0.2, 0.6], 10, weight=0.5)})
    out = calibration.apply(logits, flags, temperature=4.0)
    expected = probabilities(logits, 4.0)
    expected[0] = 0.5 * expected[0] + 0.5 * np.array([0.2, 0.2, 0.6])
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_training_stores_a_calibration_that_infer_applies(trained_run, heldout_file, tmp_path):
    saved = json.loads((trained_run / "calibration.json").read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == saved["temperature"]
    assert metrics["calibration"]["log_loss_before"] == pytest.approx(metrics["log_loss"], abs=1e-12)
    read = read_predictions(trained_run / "oof.csv")
    # the run as trained, and a copy whose stored temperature is far from 1 (the fitted one can be close to 1, where
    # applying it or not would look the same)
    changed = tmp_path / "changed-run"
    shutil.copytree(trained_run, changed)
    (changed / "calibration.json").write_text(json.dumps({**saved, "temperature": 2 * saved["temperature"]}))
    for run, temperature in ((trained_run, saved["temperature"]), (changed, 2 * saved["temperature"])):
        out = tmp_path / run.name / "calibrated.csv"
        check(run_cli("infer.py", "--adapter", run, "--data_file", heldout_file, "--output_file", out))
        predicted = read_predictions(out)
        by_id = dict(zip(predicted.ids, predicted.probs))
        expected = probabilities(read.logits(), temperature)
        np.testing.assert_allclose(np.stack([by_id[i] for i in read.ids]), expected, atol=1e-5)
    # doubling the temperature moves the probabilities by far more than the tolerance: the copy's check can fail
    assert np.abs(probabilities(read.logits(), saved["temperature"]) - expected).max() > 1e-3
    for name in ("reliability.png", "confusion.png", "subgroups.png"):
        assert (trained_run / name).stat().st_size > 1000, name
