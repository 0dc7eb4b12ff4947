"""CPU training with the LoRA adapters in bf16 (as trl leaves them for a QLoRA model) vs float32 (what
train_unsloth.py keeps them in, `arena.loading.adapters_to_float32`): the seconds the trainer reports.

    python bench/adapter_dtype.py                                  # demo model, 60 steps, 2 runs each, alternating
    python bench/adapter_dtype.py --steps 2 --repeats 1 --results R.json --model M --train_file F   # smoke

Each run is `train_unsloth.py --config configs/demo.yaml` in its own process; the bf16 runs skip the cast.
Run it on an idle machine: the runs share the CPU with nothing else.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import ROOT  # noqa: E402
from arena.io import write_json  # noqa: E402

MODES = ("bf16", "float32")


def child(mode: str, train_args: list[str]) -> None:
    """One training run; in bf16 mode with the float32 cast turned off."""
    import train_unsloth
    from trl import TrlParser

    if mode == "bf16":
        train_unsloth.adapters_to_float32 = lambda model: None
    parser = TrlParser((train_unsloth.DataArgs, train_unsloth.ModelArgs, train_unsloth.ScoreArgs,
                        train_unsloth.TrainConfig))
    train_unsloth.main(*parser.parse_args_and_config(train_args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="runs/demo-model", help="made by `make demo`")
    parser.add_argument("--train_file", default="data/demo/train.csv")
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "adapter_dtype_cpu.json"))
    args = parser.parse_args()

    seconds = {mode: [] for mode in MODES}
    metrics = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for mode in MODES:
                run = os.path.join(tmp, f"{mode}-{i}")
                command = [sys.executable, os.path.abspath(__file__), "--child", mode, "--config", "configs/demo.yaml",
                           "--model", args.model, "--train_file", args.train_file, "--max_steps", str(args.steps),
                           "--output_dir", run, "--report_to", "none"]
                subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
                with open(os.path.join(run, "metrics.json")) as f:
                    metrics[mode] = json.load(f)
                seconds[mode].append(metrics[mode]["train_seconds"])
                print(f"{mode} run {i + 1}: {seconds[mode][-1]:.2f} s for {args.steps} steps", flush=True)
    median = {mode: statistics.median(s) for mode, s in seconds.items()}
    result = {
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "steps": args.steps,
        "train_seconds": seconds,
        "median_seconds": median,
        "bf16_over_float32": median["bf16"] / median["float32"],
        "train_loss": {mode: m["train_loss"] for mode, m in metrics.items()},
        "adapter_dtype": {mode: m["adapter_dtype"] for mode, m in metrics.items()},  # what each run really trained
        "held_out_log_loss": {mode: m["log_loss"] for mode, m in metrics.items()},
        "command": "python " + " ".join(sys.argv),
    }
    write_json(args.results, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # one run: --child MODE, then train_unsloth.py's arguments
        child(sys.argv[2], sys.argv[3:])
    else:
        main()
