"""Score chatbot battles with a fine-tuned adapter (or several, an ensemble; or a base model, zero-shot) and write a
submission.

    python infer.py --adapter runs/demo --data_file data/demo/test.csv --output_file submission.csv
    python infer.py --adapter runs/demo-cv --data_file data/demo/test.csv --output_file cv.csv   # its fold-<k>/ runs
    python infer.py --adapter runs/a --adapter runs/b --weights 2 1 --data_file test.csv --output_file ab.csv
    python infer.py --adapter RUN --model /kaggle/input/llama-3-8b --data_file test.csv --tta   # a local base
    python infer.py --model runs/demo-model --data_file data/demo/train.csv --output_file zero_shot.csv
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml infer.py --adapter ... --data_file ...

With --adapter the base model, its 4-bit setting, prompt template, labels, budget, dtype, chat-template setting and
label head are those the run was trained with (read from the run folder), and the run's calibration.json
(temperature, priors) is applied unless --no_calibration; --temperature overrides its temperature. Several adapters
on one base share one load of it; their probabilities are combined (--combine prob|logprob, --weights). --model with
--adapter puts the adapters on that base instead (a local copy of the same model: its architecture and sizes are
checked against each run's base_model.json before any weight is loaded). With --model alone, the template, labels,
budget and calibration are the folder's when it has them (a merged export: tools/merge_adapter.py), and the prompt
goes into the tokenizer's chat template when it has one (--chat_template false: the plain prompt). The output is
`id,winner_model_a,winner_model_b,winner_tie`, written atomically; a run of two labels (two-way data, the WSDM Cup
layout) writes `id,winner_model_a,winner_model_b` and, beside it, the competition's submission `id,winner` (model_a
or model_b, the more probable) as `<output>_winner.csv` (submission.csv -> submission_winner.csv). When the data has
labels, metrics.json is written next to it and the log loss and accuracy printed. With --on_bad_row skip, the
skipped rows are listed in `<output>.bad_rows.csv` beside it (submission.csv -> submission.bad_rows.csv).
"""

import unsloth  # noqa: F401  (first: unsloth patches transformers on import)
from unsloth import FastLanguageModel

import os
import shutil
import sys
from dataclasses import dataclass, field, replace

import numpy as np
from accelerate.utils import release_memory

from arena.calibration import Calibration, RowFlags
from arena.config import (
    DEFAULT_TEMPLATE, DTYPE_HELP, ZERO_SHOT_TEMPLATE, ListFlag, ScoreArgs, load_run_config, parse_settings,
)
from arena.data import BadRows, DataError, check_label_count, read_pairs
from arena.ensemble import DEFAULT_METHOD, METHODS, add_adapters, by_base, combine, run_folders
from arena.io import write_json
from arena.label_head import FILE as LABEL_HEAD_FILE
from arena.label_head import load_label_head
from arena.prompts import DEFAULT_LABELS, Renderer, read_template
from arena.run import (
    add_bayes_limit, check_base, dtype_name, load_model, model_fingerprint, process_state, winners_file,
    write_predictions, write_winners,
)
from arena.scoring import BatchCache, log_loss, metrics, probabilities, score_logits


@dataclass
class InferArgs:
    data_file: str = field(default=None, metadata={"help": "CSV / Parquet / JSON Lines file with the arena columns."})
    output_file: str = field(default="submission.csv", metadata={"help": "Submission CSV (written atomically)."})
    adapter: list[str] = field(
        default_factory=list,
        metadata={"help": "Run folder(s) from train_unsloth.py; several (or a --fold all folder) make an ensemble.",
                  "action": ListFlag},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Alone: a base model, zero-shot, or a merged export (tools/merge_adapter.py). With "
                          "--adapter: the base to put the adapters on (a local copy of the one they were trained on; "
                          "default: the base in each adapter_config.json).",
                  "aliases": ["--model"]},
    )
    prompt_template: str | None = field(
        default=None,
        metadata={"help": f"Default: the folder's prompt.txt, else {DEFAULT_TEMPLATE} (--adapter) or "
                          f"{ZERO_SHOT_TEMPLATE}."},
    )
    labels: list[str] | None = field(default=None, metadata={"help": "Default: the run's, else ' A' ' B' ' Tie'."})
    max_length: int | None = field(default=None, metadata={"help": "Token budget; default: the run's, else 3072."})
    dtype: str | None = field(default=None, metadata={"help": DTYPE_HELP + " Default: the run's, else auto."})
    chat_template: bool | None = field(
        default=None,
        metadata={"help": "Wrap the prompt in the tokenizer's chat template. Default: the run's setting with "
                          "--adapter; with --model, on when the tokenizer has a chat template."},
    )
    load_in_4bit: bool | None = field(
        default=None,
        metadata={"help": "Load the base weights in 4-bit NF4. Default: the run's setting with --adapter (a run trained "
                          "on 16-bit weights is scored on them), else on."},
    )
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit weights instead (wins over --load_in_4bit)."})
    on_bad_row: str = field(
        default="error",
        metadata={"help": "'error' or 'skip': skipped rows get no prediction and are listed in OUTPUT.bad_rows.csv."},
    )
    resume: bool = field(
        default=False, metadata={"help": "Reuse the batches an interrupted run finished (cached beside the output)."}
    )
    no_calibration: bool = field(
        default=False, metadata={"help": "The model's own probabilities: ignore the runs' calibration.json."}
    )
    temperature: float | None = field(
        default=None, metadata={"help": "Use this temperature instead of the runs' fitted ones."}
    )
    combine: str = field(
        default=DEFAULT_METHOD, metadata={"help": f"How an ensemble combines: {' or '.join(METHODS)} (mean of the "
                                                  "probabilities or of the log-probabilities)."}
    )
    weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per adapter (normalised); default: equal."}
    )


def main(args: InferArgs, score_args: ScoreArgs) -> None:
    state = process_state()
    if not args.adapter and not args.model_name_or_path:
        raise DataError("give --adapter RUN_FOLDER (one or more; and optionally --model BASE_MODEL), or --model alone")
    if not args.data_file:
        raise DataError("no data: give --data_file")
    members = run_folders(args.adapter) if args.adapter else [args.model_name_or_path]
    # run folders, or a model folder with a run's prompt.txt and config.yaml beside it (tools/merge_adapter.py)
    runs = [load_run_config(m) for m in members]
    templates = [(path, read_template(path)) for path in (template_file(args, m) for m in members)]  # stops early
    base = args.model_name_or_path if args.adapter else None
    for member in members if base else []:
        check_base(member, base)  # each adapter, before any weight is loaded

    bad_rows = BadRows()
    pairs = read_pairs(args.data_file, args.on_bad_row, bad_rows, seed=runs[0].get("seed", 0))
    if args.on_bad_row == "skip" and state.is_main_process:
        record = os.path.splitext(args.output_file)[0] + ".bad_rows.csv"
        bad_rows.write(record)  # written even when empty: the record of this run
        print(f"skipped {len(bad_rows)} bad rows, listed in {record}")
    if not pairs:
        raise DataError(f"{args.data_file}: no rows left to score")
    label_texts = [member_labels(args, run) for run in runs]
    if len({len(x) for x in label_texts}) > 1:
        raise DataError("the ensemble's members differ in their number of labels: "
                        + "; ".join(f"{m}: {x!r}" for m, x in zip(members, label_texts)))
    check_label_count(pairs, label_texts[0])

    folder, name = os.path.split(os.path.abspath(args.output_file))
    cache_folder = os.path.join(folder, f".{name}.cache")
    if not args.resume and state.is_main_process:
        shutil.rmtree(cache_folder, ignore_errors=True)  # a fresh run: nothing stale is reused
    state.wait_for_everyone()
    member_probs, dtypes = [None] * len(members), set()
    groups = [list(range(len(members)))] if base or not args.adapter else by_base(members)
    for group in groups:  # one load of each base model
        dtype = args.dtype or runs[group[0]].get("dtype") or "auto"
        group_args = replace(args, load_in_4bit=four_bit(args, runs[group[0]]))
        model, tokenizer = load_model(members[group[0]], max(max_length(args, runs[i]) for i in group),
                                      group_args.load_in_4bit, args.load_in_8bit, dtype=dtype, base=base)
        dtypes.add(dtype_name(model.dtype))
        names = add_adapters(model, [members[i] for i in group]) if args.adapter else [None]
        if len(group) > 1:
            state.print(f"{len(group)} adapters on one load of their base model")
        FastLanguageModel.for_inference(model)
        for i, adapter_name in zip(group, names):
            if adapter_name is not None:
                model.set_adapter(adapter_name)
            member_probs[i] = score_member(model, tokenizer, members[i], runs[i], templates[i], label_texts[i], pairs,
                                           group_args, score_args, state, cache_folder, dtype)
        del model, tokenizer
        release_memory()  # before the next base is loaded
    probs = combine(member_probs, args.weights, args.combine)
    if not state.is_main_process:
        return
    write_predictions(args.output_file, pairs, probs)
    shutil.rmtree(cache_folder, ignore_errors=True)
    print(f"wrote {len(pairs)} predictions to {args.output_file}")
    if probs.shape[1] == 2:  # two-way: the WSDM Cup's submission too
        write_winners(winners_file(args.output_file), pairs, probs)
        print(f"wrote {len(pairs)} winners (id,winner) to {winners_file(args.output_file)}")
    if all(p.label is not None for p in pairs):
        labels = np.array([p.label for p in pairs])
        result = {**metrics(probs, labels), "tta": score_args.tta, "world_size": state.num_processes,
                  "dtype": ",".join(sorted(dtypes))}
        if len(members) > 1:
            result.update(combine=args.combine, weights=args.weights,
                          members=[{"adapter": m, "log_loss": log_loss(p, labels)}
                                   for m, p in zip(members, member_probs)])
        bayes = add_bayes_limit(result, pairs)
        path = os.path.join(folder, "metrics.json")
        write_json(path, result)
        print(f"log loss {result['log_loss']:.4f}{bayes}, accuracy {result['accuracy']:.3f}, n {result['n']}  ({path})")


def max_length(args: InferArgs, run: dict) -> int:
    return args.max_length or run.get("max_length") or 3072


def four_bit(args: InferArgs, run: dict) -> bool:
    """--load_in_4bit, else the run's setting, else on."""
    return args.load_in_4bit if args.load_in_4bit is not None else run.get("load_in_4bit", True)


def member_labels(args: InferArgs, run: dict) -> list[str]:
    """--labels, else the run's, else the default three."""
    return list(args.labels or run.get("labels") or DEFAULT_LABELS)


def template_file(args: InferArgs, member: str) -> str:
    """--prompt_template, else the folder's prompt.txt, else the default for a run or for zero-shot scoring."""
    saved = os.path.join(member, "prompt.txt")
    if args.prompt_template:
        return args.prompt_template
    return saved if os.path.exists(saved) else DEFAULT_TEMPLATE if args.adapter else ZERO_SHOT_TEMPLATE


def score_member(model, tokenizer, member: str, run: dict, template: tuple[str, str], labels: list[str], pairs,
                 args: InferArgs, score_args: ScoreArgs, state, cache_folder: str, dtype: str) -> np.ndarray:
    """One model's probabilities of the pairs: its prompt (`template`: path and text), labels, budget, chat template
    and label head, then its calibration (when its folder has them)."""
    chat = args.chat_template
    if chat is None:  # the run's setting; a model alone: the tokenizer's chat template when it has one
        chat = run["chat_template"] if "chat_template" in run else not args.adapter and bool(tokenizer.chat_template)
    renderer = Renderer(tokenizer, template[1], labels, max_length(args, run), chat)
    state.print(f"{member}: prompt {template[0]}" + (", in the tokenizer's chat template" if chat else ""))
    if load_label_head(model, member, renderer.label_ids, run.get("label_head", False)):
        state.print(f"{member}: label head {os.path.join(member, LABEL_HEAD_FILE)}")
    weights = (args.load_in_4bit, args.load_in_8bit)  # as loaded: four_bit() resolved
    base = args.model_name_or_path if args.adapter else None
    cache = BatchCache(cache_folder, model_fingerprint(member, *weights, dtype, base, chat, renderer.label_ids))
    logits = score_logits(model, renderer, pairs, score_args.score_max_tokens, score_args.tta, state, cache)
    if cache.reused:
        print(f"process {state.process_index}: reused {cache.reused} finished batches, scored {cache.computed}")
    calibration = None if args.no_calibration else Calibration.load(member)
    if calibration is None:
        return probabilities(logits, args.temperature or 1.0)
    return calibration.apply(logits, RowFlags.of_pairs(pairs), args.temperature)


if __name__ == "__main__":
    try:
        main(*parse_settings((InferArgs, ScoreArgs)))
    except DataError as e:
        sys.exit(f"error: {e}")
