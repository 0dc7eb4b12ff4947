"""Score chatbot battles with a fine-tuned adapter (or a base model, zero-shot) and write a submission.

    python infer.py --adapter runs/demo --data_file data/demo/test.csv --output_file submission.csv
    python infer.py --model runs/demo-model --data_file data/demo/train.csv --output_file zero_shot.csv
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml infer.py --adapter ... --data_file ...

With --adapter the base model, prompt template, labels, budget, chat-template setting and label head are those the
run was trained with (read from the run folder); with --model the prompt goes into the tokenizer's chat template
when it has one (--chat_template false: the plain prompt). The output is
`id,winner_model_a,winner_model_b,winner_tie`, written atomically; when the data has labels, metrics.json is written
next to it and the log loss printed. With --on_bad_row skip, the skipped rows are listed in `<output>.bad_rows.csv`
beside it (submission.csv -> submission.bad_rows.csv).
"""

import unsloth  # noqa: F401  (first: unsloth patches transformers on import)
from unsloth import FastLanguageModel

import os
import sys
from dataclasses import dataclass, field

import numpy as np
from trl import TrlParser

from arena.config import DEFAULT_TEMPLATE, ZERO_SHOT_TEMPLATE, ScoreArgs, load_run_config
from arena.data import BadRows, DataError, read_pairs
from arena.io import write_json
from arena.label_head import load_label_head
from arena.prompts import DEFAULT_LABELS, Renderer, read_template
from arena.run import load_model, model_fingerprint, process_state, write_predictions
from arena.scoring import BatchCache, metrics, score_pairs


@dataclass
class InferArgs:
    data_file: str = field(default=None, metadata={"help": "CSV / Parquet / JSON Lines file with the arena columns."})
    output_file: str = field(default="submission.csv", metadata={"help": "Submission CSV (written atomically)."})
    adapter: str | None = field(default=None, metadata={"help": "A run folder from train_unsloth.py."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model alone, for zero-shot scoring.", "aliases": ["--model"]}
    )
    prompt_template: str | None = field(
        default=None, metadata={"help": f"Default: the run's prompt.txt, or {ZERO_SHOT_TEMPLATE} with --model."}
    )
    labels: list[str] | None = field(default=None, metadata={"help": "Default: the run's, else ' A' ' B' ' Tie'."})
    max_length: int | None = field(default=None, metadata={"help": "Token budget; default: the run's, else 3072."})
    chat_template: bool | None = field(
        default=None,
        metadata={"help": "Wrap the prompt in the tokenizer's chat template. Default: the run's setting with "
                          "--adapter; with --model, on when the tokenizer has a chat template."},
    )
    load_in_4bit: bool = True
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit weights instead (wins over --load_in_4bit)."})
    on_bad_row: str = field(
        default="error",
        metadata={"help": "'error' or 'skip': skipped rows get no prediction and are listed in OUTPUT.bad_rows.csv."},
    )
    resume: bool = field(
        default=False, metadata={"help": "Reuse the batches an interrupted run finished (cached beside the output)."}
    )


def main(args: InferArgs, score_args: ScoreArgs) -> None:
    state = process_state()
    if bool(args.adapter) == bool(args.model_name_or_path):
        raise DataError("give either --adapter RUN_FOLDER or --model BASE_MODEL (zero-shot)")
    if not args.data_file:
        raise DataError("no data: give --data_file")
    if args.adapter:
        run = load_run_config(args.adapter)
        template_file = args.prompt_template or os.path.join(args.adapter, "prompt.txt")
        if not os.path.exists(template_file):
            template_file = DEFAULT_TEMPLATE
    else:
        run = {}
        template_file = args.prompt_template or ZERO_SHOT_TEMPLATE
    labels = args.labels or run.get("labels") or list(DEFAULT_LABELS)
    max_length = args.max_length or run.get("max_length") or 3072

    bad_rows = BadRows()
    pairs = read_pairs(args.data_file, args.on_bad_row, bad_rows, seed=run.get("seed", 0))
    if args.on_bad_row == "skip" and state.is_main_process:
        record = os.path.splitext(args.output_file)[0] + ".bad_rows.csv"
        bad_rows.write(record)  # written even when empty: the record of this run
        print(f"skipped {len(bad_rows)} bad rows, listed in {record}")
    if not pairs:
        raise DataError(f"{args.data_file}: no rows left to score")
    weights = (args.load_in_4bit, args.load_in_8bit)
    model, tokenizer = load_model(args.adapter or args.model_name_or_path, max_length, *weights)
    FastLanguageModel.for_inference(model)
    chat = args.chat_template
    if chat is None:
        chat = run.get("chat_template", False) if args.adapter else bool(tokenizer.chat_template)
    renderer = Renderer(tokenizer, read_template(template_file), labels, max_length, chat)
    print(f"prompt: {template_file}" + (", in the tokenizer's chat template" if chat else ""))
    if args.adapter and load_label_head(model, args.adapter, renderer.label_ids, run.get("label_head", False)):
        print(f"label head: {args.adapter}/label_head.safetensors")

    folder, name = os.path.split(os.path.abspath(args.output_file))
    cache = BatchCache(
        os.path.join(folder, f".{name}.cache"),
        model_fingerprint(args.adapter or args.model_name_or_path, *weights, renderer.label_ids),
    )
    if not args.resume and state.is_main_process:
        cache.remove()  # a fresh run: nothing stale is reused
    state.wait_for_everyone()
    probs = score_pairs(model, renderer, pairs, score_args.score_max_tokens, score_args.tta, state, cache)
    if cache.reused:
        print(f"process {state.process_index}: reused {cache.reused} finished batches, scored {cache.computed}")
    if not state.is_main_process:
        return
    write_predictions(args.output_file, pairs, probs)
    cache.remove()
    print(f"wrote {len(pairs)} predictions to {args.output_file}")
    if all(p.label is not None for p in pairs):
        result = {**metrics(probs, np.array([p.label for p in pairs])), "tta": score_args.tta,
                  "world_size": state.num_processes}
        path = os.path.join(os.path.dirname(os.path.abspath(args.output_file)), "metrics.json")
        write_json(path, result)
        print(f"log loss {result['log_loss']:.4f}, accuracy {result['accuracy']:.3f}, n {result['n']}  ({path})")


if __name__ == "__main__":
    try:
        main(*TrlParser((InferArgs, ScoreArgs)).parse_args_and_config())
    except DataError as e:
        sys.exit(f"error: {e}")
