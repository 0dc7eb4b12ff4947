"""Merges a run's LoRA adapter into its base model and saves one 16-bit model folder, with the run's prompt
template and settings beside it, so that `infer.py --model OUT` scores with the run's template, labels and budget.

    python tools/merge_adapter.py runs/llama3-8b-instruct runs/llama3-8b-merged
    python infer.py --model runs/llama3-8b-merged --load_in_4bit false --data_file test.csv --output_file submission.csv

unsloth's `save_pretrained_merged(save_method="merged_16bit")` writes the merged weights (bf16 or fp16, as unsloth
picks). Into which base weights the adapter is merged follows how the base is loaded (`--load_in_4bit`, default:
as the run trained):
- 4-bit (a QLoRA run; needs a GPU): the base's 4-bit weights, dequantized, as the adapter was trained and is scored
  by `infer.py --adapter RUN`;
- 16-bit (`--load_in_4bit false`; the only choice on a CPU, where unsloth merges only into 16-bit weights): the
  base's own weights, as `infer.py --adapter RUN --load_in_4bit false` scores.
Scoring the export in 16-bit (`--load_in_4bit false`) reproduces those scores up to 16-bit rounding; in 4-bit the
merged weights are quantized again, which changes them. `prompt.txt` and `config.yaml` are copied from the run. The
folder appears only when complete (written beside it, then renamed).
"""

import unsloth  # noqa: F401  (first: unsloth patches transformers on import)

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arena.errors import DataError  # noqa: E402
from arena.io import atomic_folder  # noqa: E402
from arena.loading import load_model  # noqa: E402
from arena.prompts import DEFAULT_MAX_LENGTH  # noqa: E402
from arena.run_folder import copy_for_export, is_adapter, read_config  # noqa: E402


def merge(run: str, out: str, load_in_4bit: bool | None = None, base: str | None = None) -> None:
    if not is_adapter(run):
        raise DataError(f"{run}: no adapter_config.json; give a run folder written by train_unsloth.py")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise DataError(f"{out}: already exists; give a new folder")
    config = read_config(run)
    if load_in_4bit is None:
        load_in_4bit = config.get("load_in_4bit", True)
    model, tokenizer = load_model(run, config.get("max_length") or DEFAULT_MAX_LENGTH, load_in_4bit=load_in_4bit, base=base)
    with atomic_folder(out) as tmp:
        try:
            model.save_pretrained_merged(tmp, tokenizer, save_method="merged_16bit")
        except NotImplementedError as e:  # unsloth's CPU backend and a 4-bit base
            raise DataError(f"{run}: {e} (add --load_in_4bit false)") from None
        copy_for_export(run, tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="A run folder from train_unsloth.py (adapter, prompt.txt, config.yaml).")
    parser.add_argument("out", help="The merged model folder to write (must not exist, or be empty).")
    parser.add_argument("--load_in_4bit", choices=["true", "false"],
                        help="Merge into the base's 4-bit weights (dequantized: true) or its 16-bit ones (false); "
                             "default: as the run trained.")
    parser.add_argument("--model", help="A local copy of the run's base model (as infer.py --adapter RUN --model).")
    args = parser.parse_args()
    merge(args.run, args.out, None if args.load_in_4bit is None else args.load_in_4bit == "true", args.model)
    print(f"wrote {args.out}: {args.run} merged into its base, saved in 16-bit; score it with "
          f"infer.py --model {args.out} --load_in_4bit false")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
