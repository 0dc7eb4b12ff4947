"""The label head (`--label_head rows|scaled|fresh`, arena/label_head.py) on the tiny model: its start (the LM head's
rows, or seeded random weights, and a bias that makes the mean prediction the class frequencies; or the rows scaled,
scale and bias fitted to training rows), its logits in training and scoring against hand computations, saving and
loading (the base's sizes checked; an older version's head converted), a run trained with the classification head
and reproduced by infer.py, and the refusals."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from arena.data import read_pairs
from arena.ensemble import run_folders
from arena.errors import DataError
from arena.label_head import (
    attach_label_head,
    fitted_start,
    head_kind,
    load_label_head,
    prior_bias,
    save_label_head,
)
from arena.label_logits import trained_label_logits
from arena.prompts import DEFAULT_LABELS, Renderer, read_template, training_columns
from arena.scoring import score_logits
from conftest import check, read_probabilities, run_cli, write_held_out


def test_prior_bias_makes_the_mean_prediction_the_class_frequencies():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3)) + np.array([2.0, 1.0, -6.0])  # P(tie) near 0, as SmolLM2's rows start
    frequencies = np.array([0.4, 0.37, 0.23])
    bias = prior_bias(logits, frequencies)
    z = logits + bias
    mean = (np.exp(z) / np.exp(z).sum(1, keepdims=True)).mean(0)
    np.testing.assert_allclose(mean, frequencies, atol=1e-6)


def mean_log_loss(logits, labels, scale, bias, softcap=None):
    z = torch.as_tensor(scale * np.asarray(logits) + bias)
    z = softcap * torch.tanh(z / softcap) if softcap else z
    return torch.nn.functional.cross_entropy(z, torch.as_tensor(labels)).item()


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_fitted_start_recovers_the_scale_and_bias_of_least_log_loss(softcap):
    rng = np.random.default_rng(0)
    pre = rng.normal(size=(20000, 3)) * 8 + np.array([4.0, 3.0, -10.0])  # large, biased logits, as an LM's start
    true_scale, true_bias = 0.15, np.array([-0.2, -0.4, 0.6])
    z = true_scale * pre + true_bias
    z = softcap * np.tanh(z / softcap) if softcap else z
    p = np.exp(z - z.max(1, keepdims=True))
    labels = np.array([rng.choice(3, p=row / row.sum()) for row in p])
    logits = softcap * np.tanh(pre / softcap) if softcap else pre  # what the model gives, the soft-cap applied
    scale, bias = fitted_start(logits, labels, softcap)
    assert abs(scale - true_scale) < 0.01
    np.testing.assert_allclose(bias - bias.mean(), true_bias - true_bias.mean(), atol=0.05)
    best = mean_log_loss(pre, labels, scale, bias, softcap)
    for ds, db in ((0.01, 0), (-0.01, 0), (0, np.array([0.05, 0, -0.05]))):  # a minimum: every step away is worse
        assert mean_log_loss(pre, labels, scale + ds, bias + db, softcap) > best
    # on 64 rows, as training uses it: never worse than the unscaled rows with the bias that matches the prior
    few, few_labels = logits[:64], labels[:64]
    frequencies = np.bincount(few_labels, minlength=3) / 64
    scale, bias = fitted_start(few, few_labels)
    unscaled = mean_log_loss(few, few_labels, 1.0, prior_bias(few, frequencies))
    assert mean_log_loss(few, few_labels, scale, bias) <= unscaled


def test_head_kinds_and_the_bare_flag():
    assert [head_kind(v) for v in (True, "true", "rows", False, None, "none", "fresh", "scaled")] == \
        ["rows", "rows", "rows", "none", "none", "none", "fresh", "scaled"]
    with pytest.raises(DataError, match="--label_head must be one of none, rows, scaled, fresh"):
        head_kind("scale")
    from arena.config import DataArgs, ModelArgs, ScoreArgs, TrainConfig, parse_settings

    _, model_args, _, _ = parse_settings((DataArgs, ModelArgs, ScoreArgs, TrainConfig), ["--label_head"])
    assert model_args.label_head == "rows"


@pytest.fixture(scope="module")
def lora_model(tiny_model):
    from unsloth import FastLanguageModel

    from arena.loading import load_model

    model, tokenizer = load_model(str(tiny_model), 512, load_in_4bit=False)
    model = FastLanguageModel.get_peft_model(model, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    model.eval()
    renderer = Renderer(tokenizer, read_template("prompts/two_conversations.txt"), DEFAULT_LABELS, 512)
    return model, renderer


def label_logits_of(model, renderer, pairs):
    with torch.no_grad():
        return score_logits(model, renderer, pairs, 4096)[:, 0]


def test_rows_head_starts_as_the_lm_head_and_is_linear_in_the_hidden_state(lora_model, demo_data):
    model, renderer = lora_model
    pairs = read_pairs(str(demo_data / "train.csv"))[:12]
    plain = label_logits_of(model, renderer, pairs)
    head = attach_label_head(model, renderer.label_ids, "rows")
    try:
        np.testing.assert_allclose(label_logits_of(model, renderer, pairs), plain, atol=1e-5)
        mix, bias = torch.tensor([[1.5, -0.5, 0.0], [0.2, 1.0, 0.3], [0.0, 0.4, 2.0]]), torch.tensor([0.5, -1.0, 2.0])
        with torch.no_grad():
            head.weight.copy_(mix @ head.weight)
            head.bias.copy_(bias)
        expected = plain @ mix.double().numpy().T + bias.double().numpy()
        np.testing.assert_allclose(label_logits_of(model, renderer, pairs), expected, atol=1e-4)
        # training reads the same logits at the label positions of a right-padded batch
        columns = training_columns(renderer, pairs[:4])
        width = max(map(len, columns["input_ids"]))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in columns["input_ids"]])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in columns["labels"]])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in columns["input_ids"]])
        with torch.no_grad():
            logits, classes = trained_label_logits(model, {"input_ids": ids, "attention_mask": mask, "labels": labels},
                                                   renderer.label_ids)
        np.testing.assert_allclose(logits.double().numpy(), expected[:4], atol=1e-4)
        assert classes.tolist() == [p.label for p in pairs[:4]]
    finally:
        del model.label_head


def test_scaled_head_starts_as_the_fitted_scale_and_bias_of_the_lm_rows(lora_model, demo_data):
    from train_unsloth import new_label_head

    model, renderer = lora_model
    pairs = read_pairs(str(demo_data / "train.csv"))[:40]
    plain = label_logits_of(model, renderer, pairs)
    lines = []
    try:
        new_label_head(model, renderer, pairs, "scaled", 0, 4096, lines.append)
        head = model.label_head
        scale = float(lines[0].split("scale ")[1].split(",")[0])
        # fewer rows than PRIOR_ROWS: the sample is every row, and the fit does not depend on their order
        expected_scale, expected_bias = fitted_start(plain, np.array([p.label for p in pairs]))
        assert lines[0].startswith("label head: scaled, start scale") and abs(scale - expected_scale) < 1e-3
        np.testing.assert_allclose(head.bias.detach().numpy(), expected_bias, atol=1e-5)
        np.testing.assert_allclose(label_logits_of(model, renderer, pairs), expected_scale * plain + expected_bias,
                                   atol=1e-4)
        assert model.training  # new_label_head leaves the model in training mode
    finally:
        del model.label_head
        model.eval()


def test_fresh_head_is_seeded_and_small(lora_model):
    model, renderer = lora_model
    try:
        first = attach_label_head(model, renderer.label_ids, "fresh", seed=3).weight.detach().clone()
        again = attach_label_head(model, renderer.label_ids, "fresh", seed=3).weight.detach()
        other = attach_label_head(model, renderer.label_ids, "fresh", seed=4).weight.detach()
        assert torch.equal(first, again) and not torch.equal(first, other)
        assert first.shape == (3, model.config.hidden_size)
        assert abs(first.std().item() - model.config.initializer_range) < 0.3 * model.config.initializer_range
    finally:
        del model.label_head


def test_saved_head_is_checked_against_the_base_and_an_older_head_converts(lora_model, demo_data, tmp_path):
    model, renderer = lora_model
    pairs = read_pairs(str(demo_data / "train.csv"))[:6]
    plain = label_logits_of(model, renderer, pairs)
    head = attach_label_head(model, renderer.label_ids, "rows")
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    save_label_head(head, str(tmp_path), model.config)
    del model.label_head
    assert load_label_head(model, str(tmp_path), renderer.label_ids) is not None
    np.testing.assert_allclose(label_logits_of(model, renderer, pairs), plain + [0.1, 0.2, 0.3], atol=1e-5)

    other = type(model.config)(**{**model.config.to_dict(), "vocab_size": 999, "hidden_size": 48})
    save_label_head(head, str(tmp_path / "other"), other)
    with pytest.raises(DataError, match="vocab_size 999 and hidden_size 48; this base has vocab_size "
                                        f"{model.config.vocab_size} and hidden_size {model.config.hidden_size}"):
        load_label_head(model, str(tmp_path / "other"), renderer.label_ids)

    old = tmp_path / "old"  # a scale and a bias on the LM's label logits (before the label-rows head)
    old.mkdir()
    save_file({"label_ids": torch.tensor(renderer.label_ids), "scale": torch.tensor([2.0, 0.5, 1.0]),
               "bias": torch.tensor([1.0, -1.0, 0.0])}, str(old / "label_head.safetensors"))
    load_label_head(model, str(old), renderer.label_ids)
    np.testing.assert_allclose(label_logits_of(model, renderer, pairs), plain * [2.0, 0.5, 1.0] + [1.0, -1.0, 0.0],
                               atol=1e-4)
    del model.label_head


def test_a_head_without_its_adapter_or_an_adapter_without_weights_is_refused(tmp_path):
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "label_head.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match="a label head \\(label_head.safetensors\\) but no adapter"):
        run_folders([str(tmp_path / "head")])
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "adapter_config.json").write_text("{}")
    with pytest.raises(DataError, match="adapter_config.json but no adapter_model.safetensors"):
        run_folders([str(tmp_path / "config")])


@pytest.mark.slow
def test_the_classification_head_trains_in_the_same_trainer_and_infer_reproduces_it(tiny_model, demo_data,
                                                                                      tmp_path):
    run = tmp_path / "run"
    result = check(run_cli(
        "train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model, "--train_file",
        demo_data / "train.csv", "--output_dir", run, "--max_steps", "30", "--loss", "label",
        "--label_head", "fresh", "--logging_steps", "10",
    ))
    assert "label head: fresh, start bias" in result.stdout
    from safetensors.torch import load_file

    head = load_file(run / "label_head.safetensors")
    assert head["weight"].shape[0] == 3 and head["bias"].abs().max() > 0.01
    oof = read_probabilities(run / "oof.csv")
    data = write_held_out(run, demo_data / "train.csv", tmp_path / "heldout.csv")
    out = tmp_path / "submission.csv"
    check(run_cli("infer.py", "--adapter", run, "--data_file", data, "--output_file", out, "--no_calibration"))
    predictions = read_probabilities(out)
    assert set(predictions) == set(oof)
    for row_id, probs in predictions.items():
        np.testing.assert_allclose(probs, oof[row_id], atol=1e-5)
    (run / "label_head.safetensors").unlink()  # the run says it has a head: scoring without it is refused
    failed = run_cli("infer.py", "--adapter", run, "--data_file", data, "--output_file", out)
    assert failed.returncode != 0 and "not found, but the run was trained with --label_head" in failed.stderr
