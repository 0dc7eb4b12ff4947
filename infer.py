"""Score chatbot battles with a fine-tuned adapter (or several, an ensemble; or a base model, zero-shot) and write a
submission.

    python infer.py --adapter runs/demo --data_file data/demo/test.csv --output_file submission.csv
    python infer.py --adapter runs/demo-cv --data_file data/demo/test.csv --output_file cv.csv   # its fold-<k>/ runs
    python infer.py --adapter runs/a --adapter runs/b --weights 2 1 --data_file test.csv --output_file ab.csv
    python infer.py --model runs/demo-model --data_file data/demo/train.csv --output_file zero_shot.csv
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml infer.py --adapter ... --data_file ...

With --adapter the base model, prompt template, labels and budget are those the run was trained with (read from
the run folder), and the run's calibration.json (temperature, priors) is applied unless --no_calibration;
--temperature overrides its temperature. Several adapters on one base share one load of it; their probabilities
are combined (--combine prob|logprob, --weights). The output is `id,winner_model_a,winner_model_b,winner_tie`,
written atomically; when the data has labels, metrics.json is written next to it and the log loss printed. With
--on_bad_row skip, the skipped rows are listed in `<output>.bad_rows.csv` beside it (submission.csv ->
submission.bad_rows.csv).
"""

import unsloth  # noqa: F401  (first: unsloth patches transformers on import)
from unsloth import FastLanguageModel

import os
import shutil
import sys
from dataclasses import dataclass, field

import numpy as np
from accelerate.utils import release_memory
from trl import TrlParser

from arena.calibration import Calibration, RowFlags
from arena.config import DEFAULT_TEMPLATE, ZERO_SHOT_TEMPLATE, ListFlag, ScoreArgs, load_run_config
from arena.data import BadRows, DataError, read_pairs
from arena.ensemble import DEFAULT_METHOD, METHODS, add_adapters, by_base, combine, run_folders
from arena.io import write_json
from arena.prompts import DEFAULT_LABELS, Renderer, read_template
from arena.run import load_model, model_fingerprint, process_state, write_predictions
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
        default=None, metadata={"help": "Base model alone, for zero-shot scoring.", "aliases": ["--model"]}
    )
    prompt_template: str | None = field(
        default=None, metadata={"help": f"Default: the run's prompt.txt, or {ZERO_SHOT_TEMPLATE} with --model."}
    )
    labels: list[str] | None = field(default=None, metadata={"help": "Default: the run's, else ' A' ' B' ' Tie'."})
    max_length: int | None = field(default=None, metadata={"help": "Token budget; default: the run's, else 3072."})
    load_in_4bit: bool = True
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
    if bool(args.adapter) == bool(args.model_name_or_path):
        raise DataError("give either --adapter RUN_FOLDER (one or more) or --model BASE_MODEL (zero-shot)")
    if not args.data_file:
        raise DataError("no data: give --data_file")
    members = run_folders(args.adapter) if args.adapter else [args.model_name_or_path]
    runs = [load_run_config(m) for m in members] if args.adapter else [{}]

    bad_rows = BadRows()
    pairs = read_pairs(args.data_file, args.on_bad_row, bad_rows, seed=runs[0].get("seed", 0))
    if args.on_bad_row == "skip" and state.is_main_process:
        record = os.path.splitext(args.output_file)[0] + ".bad_rows.csv"
        bad_rows.write(record)  # written even when empty: the record of this run
        print(f"skipped {len(bad_rows)} bad rows, listed in {record}")
    if not pairs:
        raise DataError(f"{args.data_file}: no rows left to score")

    folder, name = os.path.split(os.path.abspath(args.output_file))
    cache_folder = os.path.join(folder, f".{name}.cache")
    if not args.resume and state.is_main_process:
        shutil.rmtree(cache_folder, ignore_errors=True)  # a fresh run: nothing stale is reused
    state.wait_for_everyone()
    member_probs = [None] * len(members)
    for group in by_base(members) if args.adapter else [[0]]:  # one load of each base model
        model, tokenizer = load_model(members[group[0]], max(max_length(args, runs[i]) for i in group),
                                      args.load_in_4bit, args.load_in_8bit)
        names = add_adapters(model, [members[i] for i in group]) if args.adapter else [None]
        if len(group) > 1:
            state.print(f"{len(group)} adapters on one load of their base model")
        FastLanguageModel.for_inference(model)
        for i, adapter_name in zip(group, names):
            if adapter_name is not None:
                model.set_adapter(adapter_name)
            member_probs[i] = score_member(model, tokenizer, members[i], runs[i], pairs, args, score_args, state,
                                           cache_folder)
        del model, tokenizer
        release_memory()  # before the next base is loaded
    probs = combine(member_probs, args.weights, args.combine)
    if not state.is_main_process:
        return
    write_predictions(args.output_file, pairs, probs)
    shutil.rmtree(cache_folder, ignore_errors=True)
    print(f"wrote {len(pairs)} predictions to {args.output_file}")
    if all(p.label is not None for p in pairs):
        labels = np.array([p.label for p in pairs])
        result = {**metrics(probs, labels), "tta": score_args.tta, "world_size": state.num_processes}
        if len(members) > 1:
            result.update(combine=args.combine, weights=args.weights,
                          members=[{"adapter": m, "log_loss": log_loss(p, labels)}
                                   for m, p in zip(members, member_probs)])
        path = os.path.join(folder, "metrics.json")
        write_json(path, result)
        print(f"log loss {result['log_loss']:.4f}, accuracy {result['accuracy']:.3f}, n {result['n']}  ({path})")


def max_length(args: InferArgs, run: dict) -> int:
    return args.max_length or run.get("max_length") or 3072


def score_member(model, tokenizer, member: str, run: dict, pairs, args: InferArgs, score_args: ScoreArgs, state,
                 cache_folder: str) -> np.ndarray:
    """One model's probabilities of the pairs: its prompt, labels and budget, then its calibration (runs only)."""
    if args.adapter:
        template_file = args.prompt_template or os.path.join(member, "prompt.txt")
        if not os.path.exists(template_file):
            template_file = DEFAULT_TEMPLATE
    else:
        template_file = args.prompt_template or ZERO_SHOT_TEMPLATE
    labels = args.labels or run.get("labels") or list(DEFAULT_LABELS)
    renderer = Renderer(tokenizer, read_template(template_file), labels, max_length(args, run))
    weights = (args.load_in_4bit, args.load_in_8bit)
    cache = BatchCache(cache_folder, model_fingerprint(member, *weights, renderer.label_ids))
    logits = score_logits(model, renderer, pairs, score_args.score_max_tokens, score_args.tta, state, cache)
    if cache.reused:
        print(f"process {state.process_index}: reused {cache.reused} finished batches, scored {cache.computed}")
    calibration = Calibration.load(member) if args.adapter and not args.no_calibration else None
    if calibration is None:
        return probabilities(logits, args.temperature or 1.0)
    return calibration.apply(logits, RowFlags.of_pairs(pairs), args.temperature)


if __name__ == "__main__":
    try:
        main(*TrlParser((InferArgs, ScoreArgs)).parse_args_and_config())
    except DataError as e:
        sys.exit(f"error: {e}")
