"""Training rows through trl's real SFTTrainer and collator: the label token is the only token that carries loss."""

import numpy as np
import torch
from datasets import Dataset

from arena.data import read_pairs
from arena.prompts import DEFAULT_LABELS, Renderer, read_template, training_columns


def test_only_the_label_token_carries_loss(tiny_model, demo_data, tmp_path):
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    from arena.loading import load_model

    model, tokenizer = load_model(str(tiny_model), 512)
    renderer = Renderer(tokenizer, read_template("prompts/two_conversations.txt"), DEFAULT_LABELS, 512)
    pairs = read_pairs(str(demo_data / "train.csv"))[:32]
    model = FastLanguageModel.get_peft_model(model, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, max_length=512, report_to="none")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(training_columns(renderer, pairs)),
                         processing_class=tokenizer)

    by_ids = {tuple(r.ids): renderer.label_ids[p.label] for r, p in zip(renderer.render_many(pairs), pairs)}
    batch = next(iter(trainer.get_train_dataloader()))
    labels, mask = batch["labels"], batch["attention_mask"]
    assert (mask[:, 0] == 1).all() and (mask.sum(1) < mask.shape[1]).any()  # right padding, some rows padded
    for row in range(labels.shape[0]):
        trained = (labels[row] != -100).nonzero().flatten().tolist()
        last = int(mask[row].sum()) - 1
        assert trained == [last]  # one token, the last real one: not EOS, not the prompt, not padding
        prompt = tuple(batch["input_ids"][row, :last].tolist())
        assert labels[row, last].item() == by_ids[prompt] in renderer.label_ids

    # the trainer's loss is exactly the cross-entropy of those tokens
    model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=mask).logits
    rows = torch.arange(labels.shape[0])
    last = mask.sum(1) - 1
    manual = torch.nn.functional.cross_entropy(logits[rows, last - 1].float(), labels[rows, last])
    np.testing.assert_allclose(loss.item(), manual.item(), rtol=1e-4)
