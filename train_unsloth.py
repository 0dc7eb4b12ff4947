"""Fine-tune a causal LM (unsloth, LoRA) to predict which of two chatbot answers a human preferred, and score the
held-out fold with the trained model.

    python train_unsloth.py --config configs/demo.yaml                       # train, score fold 0, calibrate
    python train_unsloth.py --config configs/llama3-8b-instruct.yaml --train_file train.csv --fold 0
    python train_unsloth.py --config configs/llama3-8b-instruct.yaml --train_file train.csv --dry_run  # data only
    python train_unsloth.py --config configs/demo.yaml --fold all --output_dir runs/demo-cv   # every fold: CV
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml train_unsloth.py --config ...

Writes the run folder (--output_dir; its files: arena/run_folder.py) and prints the held-out log loss. Every
setting is a flag or a key of the --config YAML (arena/config.py, trl's SFTConfig); the options: README.md.
"""

import unsloth  # noqa: F401  (first: unsloth patches transformers and trl on import)
from unsloth import FastLanguageModel

import os
import random
import sys
from dataclasses import replace

import numpy as np
from accelerate.utils import release_memory
from datasets import Dataset
from transformers import AutoTokenizer

from arena.assessment import assess, write_metrics
from arena.calibration import RowFlags, learn_priors
from arena.config import DataArgs, ModelArgs, ScoreArgs, TrainConfig, config_yaml, parse_settings
from arena.crossval import fold_finished, summarize
from arena.data import BadRows, check_label_count, split_data
from arena.errors import DataError
from arena.label_head import PRIOR_ROWS, attach_label_head, set_fitted_start, set_prior_bias
from arena.loading import adapters_to_float32, base_facts, load_model, local_only, precision
from arena.losses import SOFT_LABELS, ArenaTrainer, check_loss_settings
from arena.predictions import Heldout, teacher_probs
from arena.processes import process_state
from arena.prompts import Renderer, read_template, training_columns
from arena.report import data_report
from arena.run_folder import BAD_ROWS, METRICS, OOF, fold_folder, latest_checkpoint, path, save_run
from arena.scoring import class_prior, probabilities, score_logits
from arena.swap import swap_augment

def main(data_args: DataArgs, model_args: ModelArgs, score_args: ScoreArgs, args: TrainConfig) -> None:
    if data_args.dry_run and data_args.fold == "all":
        data_args = replace(data_args, fold=0)  # a dry run shows the split of fold 0
    if data_args.fold == "all":
        train_all_folds(data_args, model_args, score_args, args)
    else:
        train_fold(data_args, model_args, score_args, args)


def train_all_folds(data_args: DataArgs, model_args: ModelArgs, score_args: ScoreArgs, args: TrainConfig) -> None:
    """Every fold in turn, each its own run folder (fold-<k>/), a finished one skipped; then the CV summary.
    With --resume_from_checkpoint latest, a fold resumes where it has a checkpoint and starts afresh where not."""
    state = process_state()
    folds = split_data(data_args.train_file, data_args.extra_file, data_args.n_folds, 0, args.seed,
                       data_args.on_bad_row).folds
    for k in range(data_args.n_folds):
        folder = fold_folder(args.output_dir, k)
        state.wait_for_everyone()
        if fold_finished(folder, k, folds):
            state.print(f"fold {k}: finished ({path(folder, METRICS)}), skipped")
            continue
        state.print(f"fold {k} of {data_args.n_folds}: training into {folder}")
        resume = args.resume_from_checkpoint
        if resume == "latest" and latest_checkpoint(folder) is None:
            resume = None
        train_fold(replace(data_args, fold=k), model_args, score_args,
                   replace(args, output_dir=folder, resume_from_checkpoint=resume))
        release_memory()
    if state.is_main_process:
        summarize(args.output_dir, data_args.n_folds, args.seed, log=state.print)


def train_fold(data_args: DataArgs, model_args: ModelArgs, score_args: ScoreArgs, args: TrainConfig) -> None:
    """One run: train on every fold but `data_args.fold`, save, score the held-out fold, calibrate."""
    state = process_state()
    log = state.print
    run = args.output_dir
    if not model_args.model_name_or_path:
        raise DataError("no model: give --model_name_or_path (a hub name or a local folder)")
    resume = resume_path(args.resume_from_checkpoint, run)  # a wrong path stops before the model is loaded
    template = read_template(data_args.prompt_template)
    check_loss_settings(args.loss, args.distill_alpha, args.distill_temperature, bool(data_args.teacher_file))

    # ---- data
    bad_rows = BadRows()
    split = split_data(
        data_args.train_file, data_args.extra_file, data_args.n_folds, data_args.fold, args.seed,
        data_args.on_bad_row, bad_rows,
    )
    check_label_count(split.train + split.heldout, data_args.labels)  # 3 labels for three-way data, 2 for two-way
    train_pairs, soft = training_pairs(split, data_args, args.swap_augment, bad_rows)
    for name, count in split.counts.items():
        log(f"{name}: {count}")
    if data_args.on_bad_row == "skip" and state.is_main_process:
        bad_rows.write(path(run, BAD_ROWS))  # written even when empty: the record of this run
        log(f"skipped rows are listed in {path(run, BAD_ROWS)}")

    # ---- model and prompt (a dry run needs only the tokenizer)
    if data_args.dry_run:
        model, tokenizer = None, AutoTokenizer.from_pretrained(
            model_args.model_name_or_path, **local_only(model_args.model_name_or_path))
    else:
        model, tokenizer = load_model(model_args.model_name_or_path, args.max_length, model_args.load_in_4bit,
                                      dtype=args.dtype)
    renderer = Renderer(tokenizer, template, data_args.labels, args.max_length, data_args.chat_template)
    label_tokens = tokenizer.convert_ids_to_tokens(renderer.label_ids)
    log(f"label tokens: {dict(zip(data_args.labels, label_tokens))} (the first token of each label is trained)")

    if data_args.dry_run:
        if state.is_main_process:
            print(data_report(split, renderer, run))
        return

    columns = training_columns(renderer, train_pairs)
    if soft is not None:
        columns[SOFT_LABELS] = soft
    dataset = Dataset.from_dict(columns)

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
    if model_args.label_head != "none":
        new_label_head(model, renderer, split.train, model_args.label_head, args.seed, score_args.score_max_tokens, log)
    trainer = ArenaTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                           label_ids=renderer.label_ids)
    adapters_to_float32(model)
    result = trainer.train(resume_from_checkpoint=resume)

    # ---- save
    trainer.save_model(run)
    if state.is_main_process:
        save_run(run, config_yaml(data_args, model_args, score_args, args), data_args.prompt_template, split.folds,
                 base_facts(model.config))

    # ---- same-model scoring of the held-out fold
    if not split.heldout:
        return
    # the trainer wrapped the model's forward in its mixed-precision autocast: unwrapped, the model scored here is
    # the function infer.py rebuilds from the saved adapter
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    FastLanguageModel.for_inference(model)
    logits = score_logits(model, renderer, split.heldout, score_args.score_max_tokens, score_args.tta, state)
    if not state.is_main_process:
        return
    heldout = Heldout.of_pairs(split.heldout, renderer.render_many(split.heldout), logits, probabilities(logits))
    heldout.write(path(run, OOF))  # an output: what follows uses `heldout` in memory
    train_labels = np.array([p.label for p in split.train])
    priors = learn_priors(train_labels, RowFlags.of_pairs(split.train), heldout.probs.shape[1]) \
        if args.degenerate_priors else {}
    extra = {
        "fold": data_args.fold,
        "world_size": state.num_processes,
        "train_rows": len(split.train),
        "train_loss": result.training_loss,
        "train_seconds": result.metrics["train_runtime"],
        "tta": score_args.tta,
        **precision(model),
        **assess(run, heldout, priors, args.seed),
    }
    # metrics.json last: a fold with it is finished
    write_metrics(path(run, METRICS), heldout.probs, heldout.labels, extra, split.heldout,
                  title=f"held-out fold {data_args.fold}: ", log=log)

def training_pairs(split, data_args: DataArgs, swap: bool, bad_rows: BadRows):
    """The training pairs and their teacher probabilities (None without --teacher_file), with every pair also
    swapped under --swap_augment (never the held-out fold); the counts go to split.counts."""
    pairs, soft = split.train, None
    if data_args.teacher_file:
        pairs, soft = teacher_probs(data_args.teacher_file, pairs, data_args.on_bad_row, bad_rows,
                                    len(data_args.labels))
        files = len(data_args.teacher_file)
        split.counts["training rows with teacher probabilities" + (f" (mean of {files} files)" if files > 1 else "")] = len(pairs)
        if data_args.on_bad_row == "skip":
            split.counts["bad rows skipped"] = len(bad_rows)
    if swap:
        pairs, soft = swap_augment(pairs, soft)
        split.counts["swapped rows added (--swap_augment)"] = len(pairs) // 2
    return pairs, soft


def new_label_head(model, renderer: Renderer, pairs, kind: str, seed: int, max_tokens, log) -> None:
    """--label_head rows|scaled|fresh: the head and its start, from its logits on a seeded sample of the training
    rows: `rows` and `fresh` a bias that makes the mean prediction there the training labels' class frequencies;
    `scaled` the scale and bias of least log loss there."""
    head = attach_label_head(model, renderer.label_ids, kind, seed)
    sample = random.Random(seed).sample(pairs, min(PRIOR_ROWS, len(pairs)))
    model.eval()
    logits = score_logits(model, renderer, sample, max_tokens)[:, 0]
    model.train()
    if kind == "scaled":
        scale, bias = set_fitted_start(head, logits, np.array([p.label for p in sample]),
                                       getattr(model.config, "final_logit_softcapping", None))
        start = f"scale {scale:.4g}, bias {np.round(bias, 3).tolist()}"
    else:
        frequencies = class_prior(np.array([p.label for p in pairs]), 1, len(renderer.label_ids))[0]
        start = f"bias {np.round(set_prior_bias(head, logits, frequencies), 3).tolist()}"
    log(f"label head: {kind}, start {start} (from {len(sample)} training rows)")


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


if __name__ == "__main__":
    try:
        main(*parse_settings((DataArgs, ModelArgs, ScoreArgs, TrainConfig)))
    except DataError as e:
        sys.exit(f"error: {e}")
