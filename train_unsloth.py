"""Fine-tune a causal LM to predict which of two chatbot answers a human preferred, with unsloth QLoRA.

The model reads a prompt showing both conversations and learns the next token: " A", " B" or " Tie". Only that
label token carries loss. After training, the same model (in inference mode) scores the held-out fold.

    python train_unsloth.py --config configs/demo.yaml
    python train_unsloth.py --config configs/llama3-8b-instruct.yaml --train_file train.csv --fold 0
    python train_unsloth.py --config configs/llama3-8b-instruct.yaml --train_file train.csv --dry_run
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml train_unsloth.py --config ...

Every setting is a flag (`--learning_rate 1e-4`) or a key in the --config YAML; see arena/config.py and trl's
SFTConfig. The run folder (--output_dir) gets: the LoRA adapter and tokenizer, config.yaml, prompt.txt,
folds.csv, oof.csv (held-out predictions), metrics.json and versions.json; label_head.safetensors with
--label_head; bad_rows.csv with --on_bad_row skip; only lengths.png (and bad_rows.csv) with --dry_run, which loads
the tokenizer alone and trains nothing.
"""

import unsloth  # noqa: F401  (first: unsloth patches transformers and trl on import)
from unsloth import FastLanguageModel

import os
import shutil
import sys

import numpy as np
from datasets import Dataset
from transformers import AutoTokenizer
from trl import SFTTrainer, TrlParser

from arena.config import DataArgs, ModelArgs, ScoreArgs, TrainConfig, save_config
from arena.data import BadRows, DataError, split_data
from arena.io import atomic_open, write_json
from arena.label_head import LabelHeadTrainer, attach_label_head
from arena.prompts import Renderer, read_template, training_columns
from arena.report import data_report
from arena.run import (
    adapters_to_float32, latest_checkpoint, load_model, process_state, versions, write_predictions,
)
from arena.scoring import metrics, score_pairs


def main(data_args: DataArgs, model_args: ModelArgs, score_args: ScoreArgs, args: TrainConfig) -> None:
    state = process_state()
    log = state.print
    run = args.output_dir
    if not model_args.model_name_or_path:
        raise DataError("no model: give --model_name_or_path (a hub name or a local folder)")

    # ---- data
    bad_rows = BadRows()
    split = split_data(
        data_args.train_file, data_args.extra_file, data_args.n_folds, data_args.fold, args.seed,
        data_args.on_bad_row, bad_rows,
    )
    for name, count in split.counts.items():
        log(f"{name}: {count}")
    if data_args.on_bad_row == "skip" and state.is_main_process:
        bad_rows.write(os.path.join(run, "bad_rows.csv"))  # written even when empty: the record of this run
        log(f"skipped rows are listed in {run}/bad_rows.csv")

    # ---- model and prompt (a dry run needs only the tokenizer)
    if data_args.dry_run:
        model, tokenizer = None, AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    else:
        model, tokenizer = load_model(model_args.model_name_or_path, args.max_length, model_args.load_in_4bit)
    template = read_template(data_args.prompt_template)
    renderer = Renderer(tokenizer, template, data_args.labels, args.max_length, data_args.chat_template)
    label_tokens = tokenizer.convert_ids_to_tokens(renderer.label_ids)
    log(f"label tokens: {dict(zip(data_args.labels, label_tokens))} (the first token of each label is trained)")

    if data_args.dry_run:
        if state.is_main_process:
            print(data_report(split, renderer, run))
        return

    dataset = Dataset.from_dict(training_columns(renderer, split.train))

    # ---- training
    model = FastLanguageModel.get_peft_model(
        model,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
        use_gradient_checkpointing=gradient_checkpointing(model_args.use_gradient_checkpointing),
        random_state=args.seed,
    )
    if model_args.label_head:
        attach_label_head(model, renderer.label_ids)
    trainer_class = LabelHeadTrainer if model_args.label_head else SFTTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    if not unsloth.is_bfloat16_supported():
        adapters_to_float32(model)
    result = trainer.train(resume_from_checkpoint=resume_path(args.resume_from_checkpoint, run))

    # ---- save
    trainer.save_model(run)
    if state.is_main_process:
        save_config(os.path.join(run, "config.yaml"), data_args, model_args, score_args, args)
        shutil.copyfile(data_args.prompt_template, os.path.join(run, "prompt.txt"))
        write_json(os.path.join(run, "versions.json"), versions())
        write_folds(os.path.join(run, "folds.csv"), split.folds)

    # ---- same-model scoring of the held-out fold
    if not split.heldout:
        return
    FastLanguageModel.for_inference(model)
    probs = score_pairs(model, renderer, split.heldout, score_args.score_max_tokens, score_args.tta, state)
    labels = np.array([p.label for p in split.heldout])
    result_metrics = {
        **metrics(probs, labels),
        "fold": data_args.fold,
        "world_size": state.num_processes,
        "train_rows": len(split.train),
        "train_loss": result.training_loss,
        "train_seconds": result.metrics["train_runtime"],
        "tta": score_args.tta,
    }
    if state.is_main_process:
        write_predictions(
            os.path.join(run, "oof.csv"), split.heldout, probs,
            {"label": labels.tolist(), "one_empty": [p.one_empty for p in split.heldout],
             "identical": [p.identical for p in split.heldout]},
        )
        write_json(os.path.join(run, "metrics.json"), result_metrics)
    log(f"held-out fold {data_args.fold}: log loss {result_metrics['log_loss']:.4f}, "
        f"accuracy {result_metrics['accuracy']:.3f}, n {result_metrics['n']}  ({run}/metrics.json)")


def gradient_checkpointing(value: str):
    return {"true": True, "false": False}.get(str(value).lower(), value)


def resume_path(value, run: str):
    """--resume_from_checkpoint latest|PATH: 'latest' is the newest complete checkpoint in the run folder."""
    if value in (None, "", "false", "False"):
        return None
    if value == "latest":
        last = latest_checkpoint(run)
        if last is None:
            raise DataError(f"{run}: no complete checkpoint to resume from")
        return last
    if not os.path.isdir(value):
        raise DataError(f"{value}: no such checkpoint folder")
    return value


def write_folds(path: str, folds: list[tuple[str, int]]) -> None:
    with atomic_open(path) as f:
        f.write("id,fold\n")
        f.writelines(f"{row_id},{fold}\n" for row_id, fold in folds)


if __name__ == "__main__":
    parser = TrlParser((DataArgs, ModelArgs, ScoreArgs, TrainConfig))
    try:
        main(*parser.parse_args_and_config())
    except DataError as e:
        sys.exit(f"error: {e}")
