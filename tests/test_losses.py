"""The training losses (arena/losses.py) against hand computations, through trl's real SFTTrainer and collator on
the tiny model; the label logits of a padded batch, a padding-free batch and a soft-capped (Gemma-2) model."""

import numpy as np
import pytest
import torch
from datasets import Dataset

from arena.config import TrainConfig
from arena.data import read_pairs
from arena.label_logits import trained_label_logits
from arena.losses import SOFT_LABELS, ArenaTrainer, label_loss
from arena.prompts import DEFAULT_LABELS, Renderer, read_template, training_columns


@pytest.fixture(scope="module")
def lora_model(tiny_model):
    from unsloth import FastLanguageModel

    from arena.loading import load_model

    model, tokenizer = load_model(str(tiny_model), 512)
    model = FastLanguageModel.get_peft_model(model, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    return model, tokenizer


def first_batch(lora_model, demo_data, tmp_path, soft=None, **settings):
    """A trainer on 32 demo rows and its first (right-padded) batch."""
    model, tokenizer = lora_model
    renderer = Renderer(tokenizer, read_template("prompts/two_conversations.txt"), DEFAULT_LABELS, 512)
    pairs = read_pairs(str(demo_data / "train.csv"))[:32]
    columns = training_columns(renderer, pairs)
    if soft is not None:
        columns[SOFT_LABELS] = soft
    args = TrainConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, max_length=512, **settings)
    trainer = ArenaTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns),
                           processing_class=tokenizer, label_ids=renderer.label_ids)
    return trainer, next(iter(trainer.get_train_dataloader())), renderer.label_ids


def by_hand(model, batch, label_ids):
    """float64 logits over the label tokens at the last prompt position, from the full-vocabulary forward pass,
    and each row's class."""
    mask = batch["attention_mask"]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=mask).logits.double()
    rows, last = torch.arange(len(mask)), mask.sum(1) - 1  # the label token is each row's last real token
    targets = [label_ids.index(t) for t in batch["labels"][rows, last].tolist()]
    return logits[rows, last - 1][:, label_ids].numpy(), np.array(targets)


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_label_loss_is_the_cross_entropy_over_the_label_logits(lora_model, demo_data, tmp_path):
    model = lora_model[0]
    trainer, batch, label_ids = first_batch(lora_model, demo_data, tmp_path, loss="label")
    assert SOFT_LABELS not in batch
    model.train()
    z, targets = by_hand(model, batch, label_ids)
    with torch.no_grad():
        logits, classes = trained_label_logits(model, dict(batch), label_ids)
        loss = trainer.compute_loss(model, dict(batch))
    np.testing.assert_allclose(logits.numpy(), z, atol=1e-5)  # the head's label rows at the label positions
    assert classes.tolist() == targets.tolist()
    manual = -log_softmax(z)[np.arange(len(z)), targets].mean()
    np.testing.assert_allclose(loss.item(), manual, rtol=1e-5)
    # with the full vocabulary (--loss token) the same tokens score a larger loss: the other tokens take mass
    trainer.args.loss = "token"
    with torch.no_grad():
        assert trainer.compute_loss(model, dict(batch)).item() > manual + 0.1


@pytest.mark.parametrize("alpha, temperature", [(0.3, 2.0), (0.0, 1.0)])
def test_distillation_loss_equals_a_hand_computation(lora_model, demo_data, tmp_path, alpha, temperature):
    model = lora_model[0]
    rng = np.random.default_rng(0)
    soft = rng.dirichlet([1, 1, 1], size=32).tolist()
    trainer, batch, label_ids = first_batch(lora_model, demo_data, tmp_path, soft=soft, loss="label",
                                            distill_alpha=alpha, distill_temperature=temperature)
    teacher = batch[SOFT_LABELS].double().numpy()
    assert teacher.shape == (8, 3)  # the collator carried the batch's rows' teacher probabilities
    assert any(np.allclose(teacher[0], s) for s in soft)
    model.train()
    z, targets = by_hand(model, batch, label_ids)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
    hard = -log_softmax(z)[np.arange(len(z)), targets]
    teacher_t = np.exp(log_softmax(np.log(teacher) / temperature))
    kl = (teacher_t * (np.log(teacher_t) - log_softmax(z / temperature))).sum(axis=1)
    manual = (alpha * hard + (1 - alpha) * temperature**2 * kl).mean()
    np.testing.assert_allclose(loss.item(), manual, rtol=1e-5)


def test_distillation_with_alpha_one_is_the_hard_label_loss():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 3) * 3, torch.tensor([0, 1, 2, 2, 1, 0])
    soft = torch.softmax(torch.randn(6, 3), dim=-1)
    hard = label_loss(logits, targets)
    np.testing.assert_allclose(label_loss(logits, targets, soft, alpha=1.0, temperature=3.0), hard, atol=1e-6)
    np.testing.assert_allclose(hard, torch.nn.functional.cross_entropy(logits, targets, reduction="none"), atol=1e-6)
    # alpha 0 with a teacher equal to the student: nothing left to learn
    student = torch.softmax(logits, dim=-1)
    np.testing.assert_allclose(label_loss(logits, targets, student, alpha=0.0), np.zeros(6), atol=1e-6)
    # a teacher probability of 0 is allowed (0 log 0 = 0)
    assert torch.isfinite(label_loss(logits, targets, torch.tensor([[1.0, 0.0, 0.0]] * 6), alpha=0.5)).all()


def test_label_logits_of_a_padding_free_batch_equal_the_padded_batch(tiny_model, demo_data):
    """unsloth on a GPU flattens a batch into one row with position_ids (trl's padding_free): the label positions
    are found there too. (On CPU, unsloth keeps padded batches; transformers' own Llama is used here.)"""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    renderer = Renderer(tokenizer, read_template("prompts/two_conversations.txt"), DEFAULT_LABELS, 512)
    columns = training_columns(renderer, read_pairs(str(demo_data / "train.csv"))[:6])
    examples = [dict(input_ids=i, labels=lab) for i, lab in zip(columns["input_ids"], columns["labels"])]
    padded = DataCollatorForLanguageModeling(tokenizer.pad_token_id)(examples)
    flat = DataCollatorForLanguageModeling(tokenizer.pad_token_id, padding_free=True)(examples)
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat and "position_ids" in flat
    with torch.no_grad():
        z_padded, y_padded = trained_label_logits(model, padded, renderer.label_ids)
        z_flat, y_flat = trained_label_logits(model, flat, renderer.label_ids)
    assert z_flat.shape == (6, 3) and y_flat.tolist() == y_padded.tolist()
    np.testing.assert_allclose(z_flat.numpy(), z_padded.numpy(), atol=1e-5)


def test_label_logits_apply_the_final_logit_softcapping_of_gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0,
                          initializer_range=1.0)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    input_ids = torch.randint(3, 64, (2, 9))
    labels = torch.full_like(input_ids, -100)
    label_ids = [5, 6, 7]
    labels[0, 8], labels[1, 6] = 6, 7
    with torch.no_grad():
        full = model(input_ids=input_ids).logits
        logits, classes = trained_label_logits(model, {"input_ids": input_ids, "labels": labels}, label_ids)
    assert full.abs().max() <= 2.0 and (full.abs() > 1.5).any()  # the cap is active
    np.testing.assert_allclose(logits.numpy(), full[[0, 1], [7, 5]][:, label_ids].numpy(), atol=1e-5)
    assert classes.tolist() == [1, 2]


def test_swap_augment_trains_each_battle_on_one_side_per_epoch(lora_model, demo_data, tmp_path):
    from arena.swap import swap_augment

    model, tokenizer = lora_model
    renderer = Renderer(tokenizer, read_template("prompts/two_conversations.txt"), DEFAULT_LABELS, 512)
    pairs, _ = swap_augment(read_pairs(str(demo_data / "train.csv"))[:12])
    args = TrainConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, max_length=512, swap_augment=True,
                       train_sampling_strategy="group_by_length")
    trainer = ArenaTrainer(model=model, args=args, train_dataset=Dataset.from_dict(training_columns(renderer, pairs)),
                           processing_class=tokenizer, label_ids=renderer.label_ids)
    sampler = trainer._get_train_sampler()
    first = list(sampler)
    assert sorted(i % 12 for i in first) == list(range(12))  # every battle once an epoch
    assert 0 < sum(i >= 12 for i in first) < 12  # some as they are, some swapped
    sampler.set_epoch(1)
    second = list(sampler)
    side = {i % 12: i >= 12 for i in first}
    assert all((i >= 12) != side[i % 12] for i in second)  # the next epoch: each battle on its other side
    swapped_label = dict(zip(renderer.label_ids, [renderer.label_ids[i] for i in (1, 0, 2)]))
    rows = Dataset.from_dict(training_columns(renderer, pairs))
    for i in range(12):  # row i + 12 is row i swapped: the same tokens, the label swapped
        a, b = rows[i], rows[i + 12]
        assert sorted(a["input_ids"][:-1]) == sorted(b["input_ids"][:-1])
        assert swapped_label[a["input_ids"][-1]] == b["input_ids"][-1]
    assert sum(len(batch["input_ids"]) for batch in trainer.get_train_dataloader()) == 12
