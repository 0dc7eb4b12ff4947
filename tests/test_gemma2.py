"""Gemma-2 on CPU through unsloth: the tiny random Gemma-2 (tied embeddings, final logit softcapping) trains, scores
its held-out fold and is reloaded by infer.py; the label head (--label_head rows: the label rows of the LM head, untied,
and a bias) under the token loss, saved with the adapter and every checkpoint, and kept apart from the tied
embeddings in a merged export; zero-shot scoring uses the chat template."""

import json

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoTokenizer

from arena.config import TrainConfig
from arena.data import read_pairs
from arena.label_head import attach_label_head
from arena.losses import ArenaTrainer
from arena.prompts import DEFAULT_LABELS, Renderer, label_token_ids, read_template, training_columns
from arena.scoring import score_pairs
from conftest import check, read_probabilities, run_cli, write_held_out

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`

STEPS = ["--max_steps", "40", "--save_strategy", "steps", "--save_steps", "20", "--logging_steps", "10"]


@pytest.fixture(scope="module")
def gemma2_run(tiny_gemma2, demo_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("gemma2-run")
    check(run_cli(
        "train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_gemma2, "--train_file",
        demo_data / "train.csv", "--output_dir", run, "--label_head", "--chat_template", *STEPS,
    ))
    return run


@pytest.fixture(scope="module")
def gemma2_trainers(tiny_gemma2, demo_data, tmp_path_factory):
    """The tiny Gemma-2 with LoRA and a label-rows head (bias 0: the model as it is), trl's SFTTrainer and ours
    (token loss) on it, a batch."""
    from trl import SFTTrainer
    from unsloth import FastLanguageModel

    from arena.loading import load_model

    model, tokenizer = load_model(str(tiny_gemma2), 512)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    assert model.config.final_logit_softcapping == 30.0 and tokenizer.chat_template
    renderer = Renderer(tokenizer, read_template("prompts/two_conversations.txt"), DEFAULT_LABELS, 512)
    pairs = read_pairs(str(demo_data / "train.csv"))[:16]
    model = FastLanguageModel.get_peft_model(model, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    head = attach_label_head(model, renderer.label_ids, "rows")
    args = TrainConfig(output_dir=str(tmp_path_factory.mktemp("gemma2-trainer")), per_device_train_batch_size=8,
                       max_length=512)
    dataset = Dataset.from_dict(training_columns(renderer, pairs))
    plain = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    ours = ArenaTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                        label_ids=renderer.label_ids)
    batch = next(iter(plain.get_train_dataloader()))
    with torch.no_grad():  # plain, built first, cast the trainable weights to bf16 (ours keeps the head float32)
        head.weight.data = model.get_output_embeddings().weight[renderer.label_ids].float()
        head.bias.data = torch.zeros(3)
    return model, head, renderer, pairs, plain, ours, batch


MIX, BIAS = torch.tensor([[1.5, -0.5, 0.0], [0.2, 1.0, 0.3], [0.0, 0.4, 2.0]]), torch.tensor([1.0, -1.0, 0.25])
CAP = 30.0  # the tiny Gemma-2's final_logit_softcapping


def set_head(head, rows):
    """The head's weights a mix of the LM's label rows, and a bias: its logits before the cap are MIX @ u + BIAS,
    where u are the LM's label logits before the cap."""
    head.weight.copy_(MIX @ rows)
    head.bias.copy_(BIAS)


def uncapped(z):
    return CAP * torch.atanh(z / CAP)


def capped(u):
    return CAP * torch.tanh(u / CAP)


def test_label_head_loss_is_the_token_loss_with_the_head_applied(gemma2_trainers):
    model, head, renderer, pairs, plain, ours, batch = gemma2_trainers
    model.train()
    rows = head.weight.detach().clone()
    with torch.no_grad():
        # the head as it starts (the LM's rows, bias 0): the same loss as trl's own (its fused LM head, softcapped)
        np.testing.assert_allclose(ours.compute_loss(model, dict(batch)).item(),
                                   plain.compute_loss(model, dict(batch)).item(), rtol=1e-5)
        set_head(head, rows)
        loss = ours.compute_loss(model, dict(batch)).item()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
        head.weight.copy_(rows)
        head.bias.zero_()
    # by hand: the logits before each row's label token, over the vocabulary, with the label columns the head's
    last = batch["attention_mask"].sum(1) - 1
    index = torch.arange(len(last))
    at_label = logits[index, last - 1]
    ids = renderer.label_ids
    at_label[:, ids] = capped(uncapped(at_label[:, ids]) @ MIX.double().T + BIAS.double())
    manual = torch.nn.functional.cross_entropy(at_label, batch["input_ids"][index, last])
    np.testing.assert_allclose(loss, manual.item(), rtol=1e-5)
    assert abs(loss - plain.compute_loss(model, dict(batch)).item()) > 0.1  # the head really changed it


def test_label_head_trains_with_the_adapter_and_scoring_applies_it(gemma2_trainers):
    from unsloth import FastLanguageModel

    model, head, renderer, pairs, plain, ours, batch = gemma2_trainers
    model.train()
    ours.compute_loss(model, dict(batch)).backward()
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0
    trained = {id(p) for group in ours.create_optimizer().param_groups for p in group["params"]}
    assert {id(head.weight), id(head.bias)} <= trained
    model.zero_grad()
    FastLanguageModel.for_inference(model)
    rows = head.weight.detach().clone()
    try:
        with torch.no_grad():
            ids = torch.tensor([renderer.render(pairs[0]).ids])
            chosen = model(input_ids=ids).logits[0, -1, renderer.label_ids].double()
            set_head(head, rows)
            probs = score_pairs(model, renderer, pairs, max_tokens=4096)
        expected = torch.softmax(capped(MIX.double() @ uncapped(chosen) + BIAS.double()), -1).numpy()
        np.testing.assert_allclose(probs[0], expected, atol=1e-5)
    finally:
        with torch.no_grad():
            head.weight.copy_(rows)
            head.bias.zero_()
        FastLanguageModel.for_training(model)


def test_gemma2_trains_with_the_label_head_and_chat_template(gemma2_run, tiny_gemma2):
    config = yaml.safe_load((gemma2_run / "config.yaml").read_text())
    assert config["label_head"] == "rows" and config["chat_template"] is True
    head = load_file(gemma2_run / "label_head.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(gemma2_run)
    assert head["label_ids"].tolist() == label_token_ids(tokenizer, DEFAULT_LABELS)
    from arena.loading import load_model

    base, _ = load_model(str(tiny_gemma2), 512, load_in_4bit=False)
    rows = base.get_output_embeddings().weight.detach()[head["label_ids"]].float()
    assert (head["weight"] - rows).abs().max() > 1e-3 and head["bias"].abs().max() > 1e-3  # trained
    for step in (20, 40):
        assert (gemma2_run / f"checkpoint-{step}" / "label_head.safetensors").exists()
    metrics = json.loads((gemma2_run / "metrics.json").read_text())
    assert metrics["n"] > 250 and np.isfinite(metrics["log_loss"])


def test_infer_reloads_the_label_head_and_chat_template_and_reproduces_oof(gemma2_run, demo_data, tmp_path):
    oof = read_probabilities(gemma2_run / "oof.csv")
    data = write_held_out(gemma2_run, demo_data / "train.csv", tmp_path / "heldout.csv")
    out = tmp_path / "submission.csv"
    result = check(run_cli("infer.py", "--adapter", gemma2_run, "--data_file", data, "--output_file", out,
                              "--no_calibration"))
    assert "in the tokenizer's chat template" in result.stdout and f"label head {gemma2_run}/label_head.safetensors" in result.stdout
    predictions = read_probabilities(out)
    assert set(predictions) == set(oof)
    for row_id, probs in predictions.items():
        np.testing.assert_allclose(probs, oof[row_id], atol=1e-5)


def test_resuming_restores_the_label_head(gemma2_run, tiny_gemma2, demo_data, tmp_path):
    """From checkpoint 20 to step 40 in another folder: the same head and held-out scores as the run itself."""
    run = tmp_path / "resumed"
    check(run_cli(
        "train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_gemma2, "--train_file",
        demo_data / "train.csv", "--output_dir", run, "--label_head", "--chat_template", *STEPS,
        "--resume_from_checkpoint", gemma2_run / "checkpoint-20",
    ))
    for name, tensor in load_file(gemma2_run / "label_head.safetensors").items():
        np.testing.assert_allclose(load_file(run / "label_head.safetensors")[name], tensor, atol=1e-4)
    oof, resumed = read_probabilities(gemma2_run / "oof.csv"), read_probabilities(run / "oof.csv")
    for row_id, probs in oof.items():
        np.testing.assert_allclose(resumed[row_id], probs, atol=1e-4)


def test_zero_shot_scoring_uses_the_chat_template_of_the_tokenizer(tiny_gemma2, demo_data, tmp_path):
    out = tmp_path / "zero_shot.csv"
    result = check(run_cli("infer.py", "--model", tiny_gemma2, "--data_file", demo_data / "test.csv",
                              "--output_file", out, "--max_length", "512"))
    assert f"{tiny_gemma2}: prompt prompts/zero_shot.txt, in the tokenizer's chat template" in result.stdout
    predictions = read_probabilities(out)
    assert len(predictions) == 60


def test_a_merged_export_keeps_the_label_head_apart_from_the_tied_embeddings(gemma2_run, demo_data, tmp_path):
    """tools/merge_adapter.py on the tied model with a head: the head travels as its own file, the export's
    embeddings stay tied, and infer.py --model scores it as the run's weights merged and rounded to the file's
    16-bit dtype, plus the head (within 1e-5; tests/test_merge_adapter.py explains the rounding)."""
    import json

    from arena.label_head import load_label_head
    from arena.loading import load_model
    from arena.run_folder import read_config

    merged = tmp_path / "merged"
    check(run_cli("tools/merge_adapter.py", gemma2_run, merged, "--load_in_4bit", "false"))
    assert (merged / "label_head.safetensors").read_bytes() == (gemma2_run / "label_head.safetensors").read_bytes()
    data, out = demo_data / "test.csv", tmp_path / "merged.csv"
    result = check(run_cli("infer.py", "--model", merged, "--load_in_4bit", "false", "--data_file", data,
                           "--output_file", out, "--no_calibration"))
    assert f"label head {merged}/label_head.safetensors" in result.stdout
    from_file = read_probabilities(out)

    dtype = getattr(torch, json.loads((merged / "config.json").read_text())["dtype"])
    exported, _ = load_model(str(merged), 512, load_in_4bit=False)
    assert exported.get_output_embeddings().weight is exported.get_input_embeddings().weight  # still tied
    run = read_config(gemma2_run)
    model, tokenizer = load_model(str(gemma2_run), run["max_length"], load_in_4bit=False)
    renderer = Renderer(tokenizer, read_template(gemma2_run / "prompt.txt"), run["labels"], run["max_length"], True)
    pairs = read_pairs(str(data))
    model = model.merge_and_unload()
    model.eval()
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.to(dtype).float()
    load_label_head(model, str(gemma2_run), renderer.label_ids, required=True)
    with torch.no_grad():
        rounded = score_pairs(model, renderer, pairs, max_tokens=16384)
    np.testing.assert_allclose(np.array([from_file[p.id] for p in pairs]), rounded, atol=1e-5)
