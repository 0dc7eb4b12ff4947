"""Does a tied-embedding model learn the demo better with `--label_head`? Held-out log loss over several seeds.

    python tools/make_random_model.py --out runs/demo-gemma2 --preset tiny-gemma2 --corpus data/demo/train.csv
    python bench/label_head.py                               # tiny Gemma-2, arms base and label_head, seeds 0-4
    python bench/label_head.py --arms base lm_head --seeds 0 1 2 --results R.json -- --max_steps 200

Each run is `train_unsloth.py --config configs/demo.yaml --model MODEL --seed S` plus the arm's flags, all in this
process (one import of unsloth, as bench/quality.py does); the seed sets the folds, the LoRA init and the data order, and both arms of a seed see the same ones.
Arms: `base` (LoRA only), `label_head` (--label_head: the label rows as a head of their own, arena/label_head.py), `lm_head` (LoRA
targets plus lm_head, which unsloth trains in full as a module to save: the output head untied from the input
embeddings, for comparison). Flags after `--` go to every run. Results (per run and the paired differences) go to
bench/results/label_head_cpu.json after every run; each run's folder and its log (RUNS/ARM-sSEED.log) are kept, and
a folder that already has its metrics.json is reused, so a stopped benchmark continues where it stopped.
"""

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_unsloth  # noqa: E402  (imports unsloth first)
from bench.common import ROOT  # noqa: E402
from arena.config import LORA_TARGETS, DataArgs, ModelArgs, ScoreArgs, TrainConfig, parse_settings  # noqa: E402
from arena.io import write_json  # noqa: E402

ARMS = {"base": [], "label_head": ["--label_head"], "lm_head": ["--lora_target_modules", *LORA_TARGETS, "lm_head"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo-gemma2")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["base", "label_head"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs", default="runs/label-head", help="run folders: RUNS/ARM-sSEED (kept)")
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "label_head_cpu.json"))
    parser.add_argument("extra", nargs="*", help="more train_unsloth.py flags for every run (after --)")
    args = parser.parse_args()
    os.chdir(ROOT)  # the configs and prompts are named relative to the project

    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            runs.append(run_one(args, arm, seed))
            print(f"{arm:>10} seed {seed}: held-out log loss {runs[-1]['log_loss']:.4f}, "
                  f"accuracy {runs[-1]['accuracy']:.3f}", flush=True)
            write_json(args.results, result(args, runs))  # after every run: a stopped benchmark keeps its runs
    print(json.dumps(result(args, runs)["summary"], indent=2))


def run_one(args, arm: str, seed: int) -> dict:
    """One training run, its output in FOLDER.log; a run folder that already has its metrics.json is reused."""
    folder = os.path.join(ROOT, args.runs, f"{arm}-s{seed}")
    start = time.time()
    if not os.path.exists(os.path.join(folder, "metrics.json")):
        flags = ["--config", "configs/demo.yaml", "--model", args.model, "--seed", str(seed), "--output_dir", folder,
                 *ARMS[arm], *args.extra]
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        with open(folder + ".log", "w") as log, redirect_stdout(log), redirect_stderr(log):
            train_unsloth.main(*parse_settings((DataArgs, ModelArgs, ScoreArgs, TrainConfig), flags))
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
    return {"arm": arm, "seed": seed, "log_loss": metrics["log_loss"], "accuracy": metrics["accuracy"],
            "train_loss": metrics["train_loss"], "n": metrics["n"], "train_seconds": metrics["train_seconds"],
            "seconds": time.time() - start}


def result(args, runs: list[dict]) -> dict:
    summary = {}
    first = args.arms[0]
    for arm in args.arms:
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        losses = [r["log_loss"] for r in mine]
        summary[arm] = {"runs": len(mine), "mean_log_loss": statistics.mean(losses), "min": min(losses),
                        "max": max(losses), "mean_accuracy": statistics.mean(r["accuracy"] for r in mine)}
        if arm != first:  # paired by seed against the first arm
            base = {r["seed"]: r["log_loss"] for r in runs if r["arm"] == first}
            diffs = [r["log_loss"] - base[r["seed"]] for r in mine if r["seed"] in base]
            summary[arm] |= {"paired_diff": diffs, "better_in": sum(d < 0 for d in diffs)}
    return {"model": args.model, "arms": {arm: ARMS[arm] for arm in args.arms}, "seeds": args.seeds,
            "extra_flags": args.extra, "runs": runs, "summary": summary, "command": "python " + " ".join(sys.argv)}


if __name__ == "__main__":
    main()
