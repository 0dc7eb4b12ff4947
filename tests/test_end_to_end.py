"""The whole product on the tiny model: train, same-model scoring of the held-out fold, infer.py with the adapter
(also for a run with its own template, labels and budget), TTA, zero-shot scoring, and a model that really learns
the demo signal."""

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from arena.config import ScoreArgs
from arena.data import LABEL_COLUMNS, DataError, read_pairs
from arena.prompts import Renderer
from arena.scoring import log_loss, score_pairs
from conftest import (
    check, held_out_ids, held_out_rows, read_probabilities, read_rows, run_cli, write_rows,
)

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`

UNIFORM_LOG_LOSS = 1.0986
SWAPPED = "-swapped"
BAD_ROWS_HEADER = ["file", "row", "id", "column", "problem"]
# not the defaults: a template of its own, labels of several tokens (the first is trained), a budget that cuts
CUSTOM_TEMPLATE = ("Two chatbots answered the same user. Which answer is better?\n\n=== first ===\n{conversation_a}\n\n"
                   "=== second ===\n{conversation_b}\n\nVerdict:")
CUSTOM_LABELS = [" first", " second", " draw"]
CUSTOM_BUDGET = 128


def read_predictions(path):
    return read_probabilities(path), read_rows(path)[0]


def swapped_id(row_id):
    return row_id + SWAPPED


@pytest.fixture(scope="module")
def plain_scores(trained_run, demo_data, tmp_path_factory):
    """infer.py --adapter on the trained run's held-out rows, then the same rows with A and B swapped (id + SWAPPED):
    (the submission's path, the CompletedProcess); the data file is data.csv beside it."""
    rows, header = held_out_rows(trained_run, demo_data / "train.csv")
    swapped = [{**r, "id": swapped_id(r["id"]), "response_a": r["response_b"], "response_b": r["response_a"],
                "winner_model_a": r["winner_model_b"], "winner_model_b": r["winner_model_a"]} for r in rows]
    folder = tmp_path_factory.mktemp("plain")
    data = write_rows(folder / "data.csv", rows + swapped, header)
    out = folder / "submission.csv"
    # the model's own probabilities, as oof.csv has them (tests/test_calibration.py checks the calibrated ones)
    return out, check(run_cli("infer.py", "--adapter", trained_run, "--data_file", data, "--output_file", out,
                              "--no_calibration"))


def test_training_writes_the_run_folder(trained_run):
    for name in ("adapter_model.safetensors", "adapter_config.json", "config.yaml", "prompt.txt", "folds.csv",
                 "oof.csv", "metrics.json", "versions.json", "calibration.json", "reliability.png", "confusion.png",
                 "subgroups.png"):
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


def test_infer_with_the_adapter_reproduces_same_model_scoring(trained_run, plain_scores):
    out, result = plain_scores
    oof, _ = read_predictions(trained_run / "oof.csv")
    held_out = held_out_ids(trained_run)
    assert set(oof) == held_out  # every held-out row, only those
    predictions, raw = read_predictions(out)
    assert list(raw[0]) == ["id", *LABEL_COLUMNS]
    assert set(predictions) == held_out | {swapped_id(i) for i in held_out}
    for row_id, probs in oof.items():
        np.testing.assert_allclose(predictions[row_id], probs, atol=1e-5)  # same prompts, same scores
    metrics = json.loads((out.parent / "metrics.json").read_text())
    labels = {r["id"]: [float(r[c]) for c in LABEL_COLUMNS].index(1.0) for r in read_rows(out.parent / "data.csv")[0]}
    ids = list(predictions)
    expected = log_loss(np.stack([predictions[i] for i in ids]), np.array([labels[i] for i in ids]))
    assert metrics["n"] == len(ids) and metrics["log_loss"] == pytest.approx(expected, abs=1e-9)
    assert f"log loss {metrics['log_loss']:.4f}" in result.stdout


def test_infer_with_tta_averages_the_swapped_scores(trained_run, plain_scores, tmp_path):
    plain, _ = read_predictions(plain_scores[0])
    rows, header = read_rows(plain_scores[0].parent / "data.csv")
    originals = [{k: v for k, v in r.items() if k not in LABEL_COLUMNS} for r in rows if not r["id"].endswith(SWAPPED)]
    data = write_rows(tmp_path / "unlabelled.csv", originals, [c for c in header if c not in LABEL_COLUMNS])
    out = tmp_path / "submission.csv"
    result = check(run_cli("infer.py", "--adapter", trained_run, "--data_file", data, "--output_file", out,
                              "--tta", "--on_bad_row", "skip", "--no_calibration"))
    tta, _ = read_predictions(out)
    assert list(tta) == [r["id"] for r in originals]
    for row_id, probs in tta.items():
        # P(A wins) of a pair is P(B wins) of the swapped pair, averaged with the pair's own
        expected = (plain[row_id] + plain[swapped_id(row_id)][[1, 0, 2]]) / 2
        np.testing.assert_allclose(probs, expected, atol=1e-5, err_msg=row_id)
    assert max(np.abs(tta[i] - plain[i]).max() for i in tta) > 1e-3  # the swap really changed something
    assert not (tmp_path / "metrics.json").exists()  # no labels, no metrics
    assert read_rows(tmp_path / "submission.bad_rows.csv") == ([], BAD_ROWS_HEADER)  # the record, even when empty
    assert "skipped 0 bad rows" in result.stdout


def test_zero_shot_scoring_with_the_base_model(tiny_model, demo_data, tmp_path):
    out = tmp_path / "zero_shot.csv"
    result = check(run_cli("infer.py", "--model", tiny_model, "--data_file", demo_data / "train.csv",
                              "--output_file", out, "--max_length", "512"))
    predictions, _ = read_predictions(out)
    assert len(predictions) == 1500
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] == 1500 and metrics["log_loss"] > 0.9  # an untrained model knows nothing
    assert "log loss" in result.stdout


@pytest.fixture(scope="module")
def custom_run(tiny_model, demo_data, tmp_path_factory):
    """A short run with CUSTOM_TEMPLATE, CUSTOM_LABELS and CUSTOM_BUDGET, on the demo rows plus one-turn rows with
    one empty answer (ids empty-N) and with two identical answers (same-N), under --on_bad_row skip:
    (the run folder, the training file)."""
    folder = tmp_path_factory.mktemp("custom")
    rows, header = read_rows(demo_data / "train.csv")
    one_turn = [r for r in rows if len(json.loads(r["prompt"])) == 1][:20]
    flagged = []
    for k, r in enumerate(one_turn):
        prompt = json.dumps([f"{json.loads(r['prompt'])[0]} (variant {k})"])
        flagged.append({**r, "id": f"empty-{k}", "prompt": prompt, "response_b": json.dumps([""])})
        flagged.append({**r, "id": f"same-{k}", "prompt": prompt, "response_b": r["response_a"]})
    data = write_rows(folder / "train.csv", rows + flagged, header)
    template = folder / "template.txt"
    template.write_text(CUSTOM_TEMPLATE)
    run = folder / "run"
    check(run_cli(
        "train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model, "--train_file", data,
        "--output_dir", run, "--prompt_template", template, "--labels", *CUSTOM_LABELS,
        "--max_length", CUSTOM_BUDGET, "--max_steps", "30", "--on_bad_row", "skip",
    ))
    return run, data


def test_infer_reads_the_runs_template_labels_and_budget(custom_run, tmp_path):
    run, data = custom_run
    assert (run / "prompt.txt").read_text() == CUSTOM_TEMPLATE
    rows, header = held_out_rows(run, data)
    # the budget cuts some of these rows, so a budget other than the run's would change their prompts
    renderer = Renderer(AutoTokenizer.from_pretrained(run), CUSTOM_TEMPLATE, CUSTOM_LABELS, CUSTOM_BUDGET)
    heldout = write_rows(tmp_path / "heldout.csv", rows, header)
    pairs = read_pairs(str(heldout))
    assert sum(r.dropped_turns + r.shortened_texts > 0 for r in renderer.render_many(pairs)) >= 10
    out = tmp_path / "submission.csv"
    check(run_cli("infer.py", "--adapter", run, "--data_file", heldout, "--output_file", out, "--no_calibration"))
    predictions, _ = read_predictions(out)
    oof, _ = read_predictions(run / "oof.csv")
    assert list(predictions) == list(oof)
    for row_id, probs in predictions.items():
        np.testing.assert_allclose(probs, oof[row_id], atol=1e-5, err_msg=row_id)


def test_oof_lists_each_rows_label_and_flags(custom_run):
    run, data = custom_run
    source = {r["id"]: r for r in read_rows(data)[0]}
    oof, header = read_rows(run / "oof.csv")
    assert header[:7] == ["id", *LABEL_COLUMNS, "label", "one_empty", "identical"]
    assert header[-3:] == ["logit_A", "logit_B", "logit_tie"]  # kept for calibration
    for r in oof:
        row = source[r["id"]]
        a, b = json.loads(row["response_a"]), json.loads(row["response_b"])
        expected = ([row[c] for c in LABEL_COLUMNS].index("1"), (not any(a)) != (not any(b)), a == b)
        assert (int(r["label"]), r["one_empty"] == "True", r["identical"] == "True") == expected, r["id"]
    assert {r["label"] for r in oof} == {"0", "1", "2"}
    assert any(r["one_empty"] == "True" for r in oof) and any(r["identical"] == "True" for r in oof)
    assert read_rows(run / "bad_rows.csv") == ([], BAD_ROWS_HEADER)  # --on_bad_row skip keeps a record, even empty


def test_infer_takes_a_template_labels_and_budget_of_its_own(tiny_model, inference_model, demo_data, tmp_path):
    rows, header = read_rows(demo_data / "train.csv")
    data = write_rows(tmp_path / "data.csv", rows[:40], header)
    template = tmp_path / "template.txt"
    template.write_text(CUSTOM_TEMPLATE)
    out = tmp_path / "zero_shot.csv"
    check(run_cli("infer.py", "--model", tiny_model, "--data_file", data, "--output_file", out,
                     "--prompt_template", template, "--labels", *CUSTOM_LABELS, "--max_length", CUSTOM_BUDGET))
    model, tokenizer = inference_model
    renderer = Renderer(tokenizer, CUSTOM_TEMPLATE, CUSTOM_LABELS, CUSTOM_BUDGET)
    pairs = read_pairs(str(data))
    assert any(r.dropped_turns + r.shortened_texts > 0 for r in renderer.render_many(pairs))  # the budget matters
    expected = score_pairs(model, renderer, pairs, max_tokens=16384)
    predictions, _ = read_predictions(out)
    np.testing.assert_allclose(np.stack([predictions[p.id] for p in pairs]), expected, atol=1e-5)


def test_a_missing_prompt_template_is_an_error_not_the_default(trained_run, tmp_path):
    from infer import InferArgs, main

    missing = tmp_path / "missing.txt"
    args = InferArgs(adapter=[str(trained_run)], prompt_template=str(missing), data_file=str(tmp_path / "data.csv"))
    with pytest.raises(DataError, match=f"^{missing}: cannot read the prompt template"):
        main(args, ScoreArgs())
