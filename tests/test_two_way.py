"""Two-way battles (the WSDM Cup 2025 layout): reading it, refusing what does not fit, and the whole product with two
labels on the tiny model: training, infer.py's two layouts, TTA."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from arena.data import DataError, Pair, check_label_count, read_pairs, split_data
from arena.swap import swap_augment
from arena.label_head import load_label_head
from arena.prompts import Renderer
from arena.loading import load_model
from arena.predictions import read_predictions, teacher_probs, write_predictions
from arena.scoring import score_pairs
from conftest import check, held_out_ids, read_rows, run_cli, same_result_tolerance, write_rows

TWO_LABELS = [" A", " B"]
WINNERS = {"winner_model_a": "model_a", "winner_model_b": "model_b"}


def two_way_rows(demo_file, limit=None) -> list[dict]:
    """The demo's one-turn rows that are not ties, in the WSDM layout: plain strings, a `winner` column."""
    rows = []
    for r in read_rows(demo_file)[0]:
        turns = [json.loads(r[c]) for c in ("prompt", "response_a", "response_b")]
        if r["winner_tie"] == "1" or len(turns[0]) != 1:
            continue
        prompt, a, b = (t[0] or "" for t in turns)
        winner = next(name for column, name in WINNERS.items() if r[column] == "1")
        rows.append({"id": r["id"], "prompt": prompt, "response_a": a, "response_b": b, "winner": winner,
                     "language": "English", "model_a": r["model_a"], "model_b": r["model_b"]})
    return rows[:limit]


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def swapped(rows):
    other = {"model_a": "model_b", "model_b": "model_a"}
    return [{**r, "response_a": r["response_b"], "response_b": r["response_a"], "winner": other[r["winner"]]}
            for r in rows]


@pytest.fixture(scope="module")
def two_way_file(demo_data, tmp_path_factory):
    rows = two_way_rows(demo_data / "train.csv", 400)
    return write_parquet(tmp_path_factory.mktemp("two-way") / "train.parquet", rows)


# ---------------------------------------------------------------------------------------------------- reading


def test_reads_the_two_way_layout_from_parquet_and_csv(demo_data, tmp_path):
    rows = two_way_rows(demo_data / "train.csv", 20)
    header = list(rows[0])
    from_parquet = read_pairs(str(write_parquet(tmp_path / "t.parquet", rows)))
    from_csv = read_pairs(str(write_rows(tmp_path / "t.csv", rows, header)))
    assert [(p.id, p.prompt, p.response_a, p.response_b, p.label, p.language, p.classes) for p in from_parquet] == \
           [(p.id, p.prompt, p.response_a, p.response_b, p.label, p.language, p.classes) for p in from_csv]
    assert [p.label for p in from_csv] == [["model_a", "model_b"].index(r["winner"]) for r in rows]
    assert {p.label for p in from_csv} == {0, 1}
    first = from_csv[0]
    assert (first.prompt, first.response_a, first.response_b) == ((rows[0]["prompt"],), (rows[0]["response_a"],),
                                                                  (rows[0]["response_b"],))
    assert first.classes == 2 and first.language == "English"


def test_reads_an_unlabelled_two_way_file(demo_data, tmp_path):
    rows = [{k: v for k, v in r.items() if k != "winner"} for r in two_way_rows(demo_data / "train.csv", 5)]
    rows[0]["prompt"] = 'He said "hi" twice, then: {"a": 1}'  # a plain string, never parsed as JSON
    csv_file = write_rows(tmp_path / "test.csv", rows, list(rows[0]))
    for path in (csv_file, write_parquet(tmp_path / "test.parquet", rows)):
        pairs = read_pairs(str(path))
        assert [p.label for p in pairs] == [None] * 5 and {p.classes for p in pairs} == {2}
        assert pairs[0].prompt == (rows[0]["prompt"],)
    kaggle_test = read_pairs(str(demo_data / "test.csv"))  # the three-way layout's test file: lists of turns
    assert {p.classes for p in kaggle_test} == {3} and all(p.label is None for p in kaggle_test)


def test_a_bad_winner_is_one_line_naming_file_row_and_value(demo_data, tmp_path):
    rows = two_way_rows(demo_data / "train.csv", 5)
    rows[2]["winner"] = "tie"
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataError) as error:
        read_pairs(str(path))
    assert str(error.value) == (f"{path}: row 3 (id {rows[2]['id']}), column winner: winner 'tie' is not model_a or "
                                "model_b")


def test_mixing_two_way_and_three_way_files_is_refused(two_way_file, demo_data):
    with pytest.raises(DataError, match=r"two-way .* three-way .*convert the three-way file") as error:
        split_data([str(two_way_file)], [str(demo_data / "train.csv")], 5, 0, 0)
    assert str(two_way_file) in str(error.value) and str(demo_data / "train.csv") in str(error.value)
    with pytest.raises(DataError, match="one run takes one kind"):
        split_data([str(demo_data / "train.csv")], [str(two_way_file)], 5, 0, 0)


def test_the_label_count_must_match_the_data(two_way_file, demo_data):
    two_way, three_way = read_pairs(str(two_way_file)), read_pairs(str(demo_data / "train.csv"))
    check_label_count(two_way, TWO_LABELS)
    check_label_count(three_way, [" A", " B", " Tie"])
    two_way_name, three_way_name = re.escape(str(two_way_file)), re.escape(str(demo_data / "train.csv"))
    with pytest.raises(DataError, match=rf"^{two_way_name}: a two-way .* needs 2 labels, got 3 .*--labels ' A' ' B'$"):
        check_label_count(two_way, [" A", " B", " Tie"])
    with pytest.raises(DataError, match=rf"^{three_way_name}: a three-way .* needs 3 labels, got 2"):
        check_label_count(three_way, TWO_LABELS)


def test_swaps_and_teacher_files_with_two_classes(tmp_path):
    pairs = [Pair("a", ("q",), ("x",), ("y",), 0, classes=2), Pair("b", ("q",), ("u",), ("v",), 1, classes=2)]
    both, probs = swap_augment(pairs, [[0.9, 0.1], [0.3, 0.7]])
    assert [p.label for p in both] == [0, 1, 1, 0] and probs[2:] == [[0.1, 0.9], [0.7, 0.3]]
    assert both[2].response_a == ("y",) and both[2].classes == 2
    write_predictions(str(tmp_path / "two.csv"), pairs, np.array([[0.9, 0.1], [0.3, 0.7]]))
    assert read_rows(tmp_path / "two.csv")[1] == ["id", "winner_model_a", "winner_model_b"]
    kept, soft = teacher_probs([str(tmp_path / "two.csv")], pairs, n_labels=2)
    np.testing.assert_allclose(soft, [[0.9, 0.1], [0.3, 0.7]])
    write_predictions(str(tmp_path / "three.csv"), pairs, np.full((2, 3), 1 / 3))
    with pytest.raises(DataError, match="three.csv: a teacher file of 3 probability columns for a run of 2 labels"):
        teacher_probs([str(tmp_path / "three.csv")], pairs, n_labels=2)


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def two_way_run(tiny_model, two_way_file, tmp_path_factory):
    """A short two-label run on the two-way file: label loss, swapped pairs, a label head, priors, TTA."""
    run = tmp_path_factory.mktemp("two-way-run")
    check(run_cli(
        "train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model, "--train_file", two_way_file,
        "--labels", " A", " B", "--prompt_template", "prompts/two_way.txt", "--max_steps", "20", "--warmup_steps",
        "5", "--per_device_train_batch_size", "8", "--loss", "label", "--swap_augment", "--label_head",
        "--degenerate_priors", "--tta", "--output_dir", run,
    ))
    return run


@pytest.fixture(scope="module")
def two_way_scores(two_way_run, two_way_file, tmp_path_factory):
    """infer.py --tta --no_calibration on the run's held-out rows: (output, the held-out rows, stdout)."""
    ids = held_out_ids(two_way_run)
    rows = [r for r in pq.read_table(two_way_file).to_pylist() if r["id"] in ids]
    folder = tmp_path_factory.mktemp("two-way-scores")
    data, out = write_parquet(folder / "heldout.parquet", rows), folder / "submission.csv"
    result = check(run_cli("infer.py", "--adapter", two_way_run, "--data_file", data, "--output_file", out, "--tta",
                              "--no_calibration"))
    return out, rows, result.stdout


def test_a_two_way_run_records_two_labels_and_scores_two_classes(two_way_run):
    assert yaml.safe_load((two_way_run / "config.yaml").read_text())["labels"] == TWO_LABELS
    oof = read_predictions(str(two_way_run / "oof.csv"))
    assert oof.probs.shape[1] == 2 and oof.logits().shape[1:] == (2, 2)  # both views, two labels
    metrics = json.loads((two_way_run / "metrics.json").read_text())
    assert metrics["n"] == len(oof.ids) and 0 <= metrics["accuracy"] <= 1
    assert set(metrics["priors"]) >= {"one_empty", "identical"}
    assert json.loads((two_way_run / "calibration.json").read_text())["temperature"] > 0
    assert (two_way_run / "label_head.safetensors").exists()


def test_infer_writes_both_layouts_and_reproduces_the_oof(two_way_run, two_way_scores):
    out, rows, stdout = two_way_scores
    predictions = read_predictions(str(out))
    assert read_rows(out)[1] == ["id", "winner_model_a", "winner_model_b"]
    assert predictions.ids == [r["id"] for r in rows]
    np.testing.assert_allclose(predictions.probs.sum(axis=1), 1, atol=1e-12)
    raw = np.array([[float(r["winner_model_a"]), float(r["winner_model_b"])] for r in read_rows(out)[0]])
    np.testing.assert_allclose(raw.sum(axis=1), 1, atol=1e-9)  # as written, not only as read back (normalised)
    oof = read_predictions(str(two_way_run / "oof.csv")).by_id()
    tolerance = same_result_tolerance(torch.float32)
    for row_id, probs in predictions.by_id().items():
        np.testing.assert_allclose(probs, oof[row_id], atol=tolerance)
    winners, header = read_rows(out.parent / "submission_winner.csv")
    assert header == ["id", "winner"]
    assert [w["id"] for w in winners] == predictions.ids
    assert [w["winner"] for w in winners] == ["model_b" if p[1] > p[0] else "model_a" for p in predictions.probs]
    metrics = json.loads((out.parent / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.3f}" in stdout and "submission_winner.csv" in stdout


def test_tta_with_two_labels_maps_the_swapped_probabilities_back(two_way_run, two_way_scores, tmp_path):
    out, rows, _ = two_way_scores
    plain_file = write_parquet(tmp_path / "plain.parquet", rows)
    swapped_file = write_parquet(tmp_path / "swapped.parquet", swapped(rows))
    config = yaml.safe_load((two_way_run / "config.yaml").read_text())
    model, tokenizer = load_model(str(two_way_run), config["max_length"])
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)
    renderer = Renderer(tokenizer, (two_way_run / "prompt.txt").read_text(), config["labels"], config["max_length"])
    load_label_head(model, str(two_way_run), renderer.label_ids, required=True)
    plain = score_pairs(model, renderer, read_pairs(str(plain_file)), 4096)
    by_hand = score_pairs(model, renderer, read_pairs(str(swapped_file)), 4096)
    tta = read_predictions(str(out)).probs
    np.testing.assert_allclose(tta, (plain + by_hand[:, [1, 0]]) / 2, atol=same_result_tolerance(torch.float32))
    # the check can fail: without the mapping back the average would be another one
    assert np.abs(tta - (plain + by_hand) / 2).max() > 100 * same_result_tolerance(torch.float32)
