"""Soft labels and swap augmentation: teacher files read by the predictions' own reader and averaged, missing ids,
swapped rows with swapped labels and teacher probabilities, the held-out fold untouched, and the demo's truth."""

import csv
import math

import numpy as np
import pandas as pd
import pytest

from arena.config import DataArgs
from arena.data import LABEL_COLUMNS, BadRows, DataError, pair_key, read_pairs, split_data
from arena.swap import swap_augment
from arena.assessment import add_bayes_limit
from arena.predictions import read_predictions, teacher_probs, write_predictions
from conftest import check, run_cli
from train_unsloth import training_pairs


def test_a_predictions_file_reads_back_as_written(demo_data, tmp_path):
    pairs = read_pairs(str(demo_data / "train.csv"))[:5]
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], size=5)
    write_predictions(str(tmp_path / "oof.csv"), pairs, probs, {"label": [p.label for p in pairs]})
    table = read_predictions(str(tmp_path / "oof.csv")).by_id()
    assert list(table) == [p.id for p in pairs]
    np.testing.assert_allclose(np.stack(list(table.values())), probs, atol=1e-12)


def test_several_teacher_files_are_averaged_csv_and_parquet(demo_data, tmp_path):
    pairs = read_pairs(str(demo_data / "train.csv"))[:4]
    first = np.array([[0.7, 0.2, 0.1]] * 4)
    write_predictions(str(tmp_path / "a.csv"), pairs, first)
    frame = pd.DataFrame({"id": [int(p.id) for p in pairs], **dict(zip(LABEL_COLUMNS, [[2.0] * 4, [1.0] * 4, [1.0] * 4]))})
    frame.to_parquet(tmp_path / "b.parquet")  # unnormalised: read as 0.5, 0.25, 0.25; integer ids
    kept, soft = teacher_probs([str(tmp_path / "a.csv"), str(tmp_path / "b.parquet")], pairs)
    assert kept == pairs
    np.testing.assert_allclose(soft, [[0.6, 0.225, 0.175]] * 4)


def test_a_teacher_file_with_a_missing_id_stops_with_one_line_or_is_skipped(demo_data, tmp_path):
    pairs = read_pairs(str(demo_data / "train.csv"))[:4]
    teacher = tmp_path / "teacher.csv"
    write_predictions(str(teacher), pairs[:3], np.full((3, 3), 1 / 3))
    with pytest.raises(DataError) as error:
        teacher_probs([str(teacher)], pairs)
    assert str(error.value) == (f"{teacher}: no teacher row for training row id {pairs[3].id} "
                                f"(of {demo_data / 'train.csv'})")
    bad_rows = BadRows()
    kept, soft = teacher_probs([str(teacher)], pairs, "skip", bad_rows)
    assert kept == pairs[:3] and len(soft) == 3
    assert [(r[0], r[2], r[3]) for r in bad_rows.rows] == [(str(teacher), pairs[3].id, "id")]


@pytest.mark.parametrize("cell, problem", [("x", "probability 'x' is not a number"),
                                           ("-0.5", "probability -0.5 is not a non-negative number")])
def test_a_bad_probability_names_file_row_and_column(tmp_path, cell, problem):
    path = tmp_path / "teacher.csv"
    path.write_text("id,winner_model_a,winner_model_b,winner_tie\n1,0.5,0.25,0.25\n2,0.5," + cell + ",0.25\n")
    with pytest.raises(DataError) as error:
        read_predictions(str(path))
    assert str(error.value) == f"{path}: row 2 (id 2), column winner_model_b: {problem}"


def test_swapped_rows_carry_swapped_labels_and_teacher_probabilities(demo_data):
    pairs = read_pairs(str(demo_data / "train.csv"))[:30]
    soft = np.random.default_rng(1).dirichlet([1, 1, 1], size=30).tolist()
    rows, probs = swap_augment(pairs, soft)
    assert rows[:30] == pairs and probs[:30] == soft
    for pair, p, swapped, q in zip(pairs, soft, rows[30:], probs[30:]):
        assert (swapped.response_a, swapped.response_b) == (pair.response_b, pair.response_a)
        assert swapped.label == {0: 1, 1: 0, 2: 2}[pair.label]
        assert q == [p[1], p[0], p[2]]
    assert {p.label for p in pairs} == {0, 1, 2}  # every kind of label was swapped here


def test_augmented_rows_never_reach_the_held_out_fold(demo_data):
    split = split_data([str(demo_data / "train.csv")], [], 5, 0, seed=0)
    held_out = {p.id for p in split.heldout}
    args = DataArgs(train_file=[str(demo_data / "train.csv")], teacher_file=[str(demo_data / "truth.csv")])
    pairs, soft = training_pairs(split, args, True, BadRows())
    assert len(pairs) == len(soft) == 2 * len(split.train)
    assert not held_out & {p.id for p in pairs}
    assert not {pair_key(p) for p in split.heldout} & {pair_key(p) for p in pairs}  # nor any swapped copy of one
    assert split.counts["swapped rows added (--swap_augment)"] == len(split.train)
    assert len(split.heldout) == split.counts["held-out rows"] and all(p.id in held_out for p in split.heldout)


def test_the_demo_states_true_probabilities_that_vary_and_its_labels_follow_them(demo_data):
    truth = read_predictions(str(demo_data / "truth.csv")).by_id()
    pairs = read_pairs(str(demo_data / "train.csv"))
    assert len(truth) == 1500 + 60
    p = np.stack([truth[pair.id] for pair in pairs])
    top = p.max(axis=1)
    assert (top > 0.95).mean() > 0.2 and (top < 0.6).mean() > 0.05  # near-certain rows and uncertain ones
    labels = np.eye(3)[[pair.label for pair in pairs]]
    np.testing.assert_allclose(labels.mean(axis=0), p.mean(axis=0), atol=0.05)  # drawn from the truth
    result = {"log_loss": 1.0}
    add_bayes_limit(result, pairs)
    entropy = -np.mean([sum(x * math.log(x) for x in row if x > 0) for row in p])
    assert result["bayes_limit"] == pytest.approx(entropy, abs=1e-9) and 0.2 < entropy < 0.6
    assert result["gap"] == pytest.approx(1.0 - entropy, abs=1e-12)


def test_no_bayes_limit_without_a_truth_file(demo_data, tmp_path):
    (tmp_path / "train.csv").write_bytes((demo_data / "train.csv").read_bytes())
    result = {"log_loss": 1.0}
    add_bayes_limit(result, read_pairs(str(tmp_path / "train.csv")))
    assert result == {"log_loss": 1.0}


def test_a_missing_teacher_row_from_the_command_line(tiny_model, demo_data, tmp_path):
    with open(demo_data / "truth.csv", newline="") as f:
        rows = list(csv.reader(f))
    teacher = tmp_path / "teacher.csv"
    with open(teacher, "w", newline="") as f:
        csv.writer(f).writerows(rows[:1] + rows[2:])  # the first training row has no teacher row
    common = ["train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model, "--train_file",
              demo_data / "train.csv", "--teacher_file", teacher, "--loss", "label", "--fold", "-1"]
    result = run_cli(*common, "--output_dir", tmp_path / "run")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {teacher}: no teacher row for training row id {rows[1][0]} (of {demo_data / 'train.csv'})")
    run = tmp_path / "skip"
    result = check(run_cli(*common, "--output_dir", run, "--on_bad_row", "skip", "--dry_run"))
    with open(run / "bad_rows.csv", newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [rows[1][0]]
    assert "bad rows skipped: 1" in result.stdout
