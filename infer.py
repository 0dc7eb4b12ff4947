"""Score chatbot battles with a trained run (or several: an ensemble; or a model alone: zero-shot) and write a
submission.

    python infer.py --adapter runs/demo --data_file data/demo/test.csv --output_file submission.csv
    python infer.py --adapter runs/demo-cv --data_file data/demo/test.csv --output_file cv.csv   # its fold-<k>/ runs
    python infer.py --adapter runs/a --adapter runs/b --weights 2 1 --data_file test.csv --output_file ab.csv
    python infer.py --adapter RUN --model /kaggle/input/llama-3-8b --data_file test.csv --tta   # a local base
    python infer.py --model runs/demo-model --data_file data/demo/train.csv --output_file zero_shot.csv
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml infer.py --adapter ... --data_file ...

Each member is scored with the settings it was trained with (read from its folder; a flag overrides them) and its
calibration.json, unless --no_calibration. Writes `id,winner_model_a,winner_model_b,winner_tie` atomically
(two-way: `id,winner_model_a,winner_model_b` and `<output>_winner.csv`); on labelled data also metrics.json beside
it, and prints the log loss. Details: docs/evaluation.md.
"""

import unsloth  # noqa: F401  (first: unsloth patches transformers on import)
from unsloth import FastLanguageModel

import os
import shutil
import sys
from dataclasses import dataclass, field

import numpy as np
from accelerate.utils import release_memory

from arena.assessment import write_metrics
from arena.calibration import Calibration, RowFlags
from arena.config import DEFAULT_TEMPLATE, ZERO_SHOT_TEMPLATE, ListFlag, ScoreArgs, parse_settings
from arena.data import BadRows, check_label_count, read_pairs
from arena.ensemble import DEFAULT_METHOD, METHODS, add_adapters, by_base, combine, run_folders
from arena.errors import DataError
from arena.label_head import FILE as LABEL_HEAD_FILE
from arena.label_head import head_kind, load_label_head
from arena.loading import DTYPE_HELP, check_base, dtype_name, load_model
from arena.predictions import winners_file, write_predictions, write_winners
from arena.processes import process_state
from arena.prompts import DEFAULT_LABELS, DEFAULT_MAX_LENGTH, Renderer, read_template
from arena.run_folder import METRICS, prompt_file, read_config
from arena.scoring import BatchCache, log_loss, model_fingerprint, probabilities, score_logits


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
    max_length: int | None = field(
        default=None, metadata={"help": f"Token budget; default: the run's, else {DEFAULT_MAX_LENGTH}."}
    )
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
        default=None, metadata={"help": "Use this temperature instead of the runs' fitted ones (not with "
                                        "--no_calibration)."}
    )
    combine: str = field(
        default=DEFAULT_METHOD, metadata={"help": f"How an ensemble combines: {' or '.join(METHODS)} (mean of the "
                                                  "probabilities or of the log-probabilities)."}
    )
    weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per adapter (normalised); default: equal."}
    )


@dataclass
class Member:
    """One ensemble member (a run folder, or a model folder alone), resolved once from the flags and its folder:
    what it is scored with and how its probabilities are calibrated."""

    folder: str
    run: dict  # its config.yaml ({} for a model without one)
    template: tuple[str, str]  # (path, text)
    labels: list[str]
    max_length: int
    chat_template: bool | None  # None: the tokenizer's chat template when it has one (a model alone)
    label_head: str  # --label_head it was trained with: unless none, label_head.safetensors must be there
    calibration: Calibration | None
    temperature: float | None  # --temperature: replaces the calibration's

    @classmethod
    def resolve(cls, args: "InferArgs", folder: str) -> "Member":
        """Flags win; else the folder's own setting (config.yaml, prompt.txt, calibration.json); else the default."""
        run = read_config(folder)
        template = args.prompt_template or prompt_file(folder) or (DEFAULT_TEMPLATE if args.adapter
                                                                    else ZERO_SHOT_TEMPLATE)
        chat = args.chat_template if args.chat_template is not None else run.get("chat_template")
        if chat is None and args.adapter:
            chat = False
        labels = list(args.labels or run.get("labels") or DEFAULT_LABELS)
        return cls(folder, run, (template, read_template(template)), labels,
                   args.max_length or run.get("max_length") or DEFAULT_MAX_LENGTH, chat,
                   head_kind(run.get("label_head")),
                   None if args.no_calibration else Calibration.load(folder), args.temperature)

    def uses_chat_template(self, tokenizer) -> bool:
        return self.chat_template if self.chat_template is not None else bool(tokenizer.chat_template)

    def probabilities(self, logits: np.ndarray, pairs) -> np.ndarray:
        """Its calibrated probabilities of [n, views, labels] logits (--temperature replaces a fitted temperature)."""
        if self.calibration is None:  # --temperature still applies to a run without calibration.json
            return probabilities(logits, self.temperature or 1.0)
        return self.calibration.apply(logits, RowFlags.of_pairs(pairs), self.temperature)


def main(args: InferArgs, score_args: ScoreArgs) -> None:
    state = process_state()
    if not args.adapter and not args.model_name_or_path:
        raise DataError("give --adapter RUN_FOLDER (one or more; and optionally --model BASE_MODEL), or --model alone")
    if not args.data_file:
        raise DataError("no data: give --data_file")
    if args.no_calibration and args.temperature is not None:
        raise DataError("--temperature replaces the runs' fitted temperature, --no_calibration leaves calibration "
                        "out: give one of them")
    # run folders, or a model folder with a run's prompt.txt and config.yaml beside it (tools/merge_adapter.py)
    folders = run_folders(args.adapter) if args.adapter else [args.model_name_or_path]
    members = [Member.resolve(args, m) for m in folders]
    base = args.model_name_or_path if args.adapter else None
    for member in members if base else []:
        check_base(member.folder, base)  # each adapter, before any weight is loaded

    bad_rows = BadRows()
    pairs = read_pairs(args.data_file, args.on_bad_row, bad_rows, seed=members[0].run.get("seed", 0))
    if args.on_bad_row == "skip" and state.is_main_process:
        record = os.path.splitext(args.output_file)[0] + ".bad_rows.csv"
        bad_rows.write(record)  # written even when empty: the record of this run
        print(f"skipped {len(bad_rows)} bad rows, listed in {record}")
    if not pairs:
        raise DataError(f"{args.data_file}: no rows left to score")
    if len({len(m.labels) for m in members}) > 1:
        raise DataError("the ensemble's members differ in their number of labels: "
                        + "; ".join(f"{m.folder}: {m.labels!r}" for m in members))
    check_label_count(pairs, members[0].labels)

    folder, name = os.path.split(os.path.abspath(args.output_file))
    cache_folder = os.path.join(folder, f".{name}.cache")
    if not args.resume and state.is_main_process:
        shutil.rmtree(cache_folder, ignore_errors=True)  # a fresh run: nothing stale is reused
    state.wait_for_everyone()
    member_probs, dtypes = [None] * len(members), set()
    groups = [list(range(len(members)))] if base or not args.adapter else by_base([m.folder for m in members])
    for group in groups:  # one load of each base model
        first = members[group[0]].run
        dtype = args.dtype or first.get("dtype") or "auto"
        # --load_in_4bit, else the run's setting, else on
        four_bit = args.load_in_4bit if args.load_in_4bit is not None else first.get("load_in_4bit", True)
        model, tokenizer = load_model(members[group[0]].folder, max(members[i].max_length for i in group),
                                      four_bit, args.load_in_8bit, dtype=dtype, base=base)
        dtypes.add(dtype_name(model.dtype))
        names = add_adapters(model, [members[i].folder for i in group]) if args.adapter else [None]
        if len(group) > 1:
            state.print(f"{len(group)} adapters on one load of their base model")
        FastLanguageModel.for_inference(model)
        for i, adapter_name in zip(group, names):
            if adapter_name is not None:
                model.set_adapter(adapter_name)
            cache = (cache_folder, four_bit, args.load_in_8bit, dtype, base)
            member_probs[i] = score_member(model, tokenizer, members[i], pairs, score_args, state, cache)
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
        extra = {"tta": score_args.tta, "world_size": state.num_processes, "dtype": ",".join(sorted(dtypes))}
        if len(members) > 1:
            extra.update(combine=args.combine, weights=args.weights,
                         members=[{"adapter": m.folder, "log_loss": log_loss(p, labels)}
                                  for m, p in zip(members, member_probs)])
        write_metrics(os.path.join(folder, METRICS), probs, labels, extra, pairs)


def score_member(model, tokenizer, member: Member, pairs, score_args: ScoreArgs, state, cache: tuple) -> np.ndarray:
    """One member's probabilities of the pairs: its prompt, labels, budget, chat template and label head, then its
    calibration. `cache`: the batch cache's folder, then what the model was loaded with (4-bit, 8-bit, dtype, base),
    which with the member's settings names the cached batches."""
    chat = member.uses_chat_template(tokenizer)
    renderer = Renderer(tokenizer, member.template[1], member.labels, member.max_length, chat)
    in_chat = ", in the tokenizer's chat template" if chat else ""
    state.print(f"{member.folder}: prompt {member.template[0]}{in_chat}")
    if load_label_head(model, member.folder, renderer.label_ids, member.label_head != "none"):
        state.print(f"{member.folder}: label head {os.path.join(member.folder, LABEL_HEAD_FILE)}")
    cache_folder, *loaded = cache
    batches = BatchCache(cache_folder, model_fingerprint(member.folder, *loaded, chat, renderer.label_ids))
    logits = score_logits(model, renderer, pairs, score_args.score_max_tokens, score_args.tta, state, batches)
    if batches.reused:
        print(f"process {state.process_index}: reused {batches.reused} finished batches, scored {batches.computed}")
    return member.probabilities(logits, pairs)

if __name__ == "__main__":
    try:
        main(*parse_settings((InferArgs, ScoreArgs)))
    except DataError as e:
        sys.exit(f"error: {e}")
