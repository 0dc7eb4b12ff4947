"""The product on a real pretrained model, SmolLM2-135M-Instruct (30 layers, tied input and output embeddings, a
ChatML chat template), in float32 weights (`--load_in_4bit false`): a few training steps, after which infer.py with
the adapter reproduces oof.csv, and zero-shot scoring that prefers a right answer to a refusal."""

import json

import numpy as np
import pytest
import torch

from conftest import check, read_probabilities, read_rows, run_cli, same_result_tolerance, write_rows

# Obvious battles: a right answer against a refusal. The model's zero-shot margins (log P(right) - log P(refusal),
# chat template, float32 weights, with --tta) measured +0.04 to +0.20. It shows no such preference between a right
# and a wrong fact ("Paris" against "Berlin"): those are left out.
BATTLES = [
    ("What do bees make?", "Bees make honey.", "I don't know."),
    ("What is the freezing point of water in Celsius?", "Water freezes at 0 degrees Celsius.",
     "I'm sorry, I can't answer that."),
    ("How many legs does a spider have?", "A spider has eight legs.", "I'm sorry, but I can't help with that."),
    ("What is the boiling point of water at sea level in Celsius?",
     "Water boils at 100 degrees Celsius at sea level.", "I'm sorry, I don't know."),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "Sorry, I cannot help with this request."),
]
pytestmark = pytest.mark.slow  # trains a model; the fixture builds the real model (`make real-model`)

HEADER = ["id", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"]


def test_real_model_folder(real_model):
    record = json.loads((real_model / "real_model.json").read_text())
    assert "Paris" in record["answer"]
    assert len(set(record["label_ids"].values())) == 3
    config = json.loads((real_model / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["tie_word_embeddings"]
    assert "quantization_config" not in config


def test_a_few_steps_then_infer_reproduces_oof(real_model, demo_data, tmp_path):
    rows, header = read_rows(demo_data / "train.csv")
    data = write_rows(tmp_path / "train.csv", rows[:12], header)
    run = tmp_path / "run"
    check(run_cli(
        "train_unsloth.py", "--model", real_model, "--train_file", data, "--output_dir", run, "--n_folds", "3",
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "128", "--learning_rate", "1e-4",
        "--load_in_4bit", "false", "--save_strategy", "no",
    ))
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(real_model)
    out = tmp_path / "scored" / "submission.csv"
    # no --load_in_4bit: the run's own setting (16-bit weights) must be used
    check(run_cli("infer.py", "--adapter", run, "--data_file", data, "--output_file", out, "--no_calibration"))
    oof, scored = read_probabilities(run / "oof.csv"), read_probabilities(out)
    assert len(oof) == 4 and set(oof) <= set(scored)
    for row_id, probs in oof.items():
        np.testing.assert_allclose(scored[row_id], probs, atol=same_result_tolerance(torch.float32), err_msg=row_id)


def test_zero_shot_prefers_the_right_answer(real_model, tmp_path):
    rows = []
    for i, (question, right, refusal) in enumerate(BATTLES):
        a, b = (right, refusal) if i % 2 == 0 else (refusal, right)  # the right answer on either side
        rows.append(dict(id=str(i), prompt=json.dumps([question]), response_a=json.dumps([a]),
                         response_b=json.dumps([b]), winner_model_a=int(a == right), winner_model_b=int(b == right),
                         winner_tie=0))
    data = write_rows(tmp_path / "battles.csv", rows, HEADER)
    out = tmp_path / "zero-shot.csv"
    check(run_cli("infer.py", "--model", real_model, "--data_file", data, "--output_file", out,
                     "--load_in_4bit", "false", "--tta", "--max_length", "256"))
    probs = read_probabilities(out)
    for row in rows:
        right, wrong = (0, 1) if row["winner_model_a"] else (1, 0)
        p = probs[row["id"]]
        assert p[right] > p[wrong], (row["prompt"], p)
