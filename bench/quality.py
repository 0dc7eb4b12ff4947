"""Held-out log loss of the recipe's variants on the demo data, over several seeds, next to the Bayes limit.

    python bench/quality.py                      # 5 variants x 5 seeds of configs/demo.yaml -> bench/results/quality_cpu.json, docs/quality_cpu.png
    python bench/quality.py --smoke --out DIR    # 1 seed, 3 steps, 300 rows: that every variant runs (tests/test_bench_smoke.py)

Variants, each adding to the one before, all else configs/demo.yaml:
- token:           the seed recipe, next-token cross-entropy over the whole vocabulary at the label token
- label:           --loss label, the cross-entropy over the three label-token logits only
- label+swap:      --swap_augment, each battle on a random side (A and B swapped or not) every epoch
- +distill(run):   --teacher_file with the predictions of this seed's label+swap run on its own training rows
                   (infer.py; in-sample, as a teacher trained on the same rows gives them), alpha 0.5, T 1
- +distill(truth): --teacher_file truth.csv, the demo's true probabilities (an oracle teacher), alpha 0.5, T 1

Seed s trains with --seed s, which also draws the folds (so each seed holds out other rows, with its own Bayes
limit) and the LoRA init and batch order. The data (data/make_demo_data.py, 3000 rows, seed 0) and the tiny model
(tools/make_random_model.py) are built once into the output folder. All runs share one process (one import of
unsloth); each is train_unsloth.py's main() with its own run folder. A run folder that already has its
metrics.json is reused, so a stopped benchmark continues, and seeds can run side by side (`--seeds 0 1 2` and
`--seeds 3 4` in two processes, then all seeds once more to write the results of every run).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_unsloth  # noqa: E402  (imports unsloth first)
import infer  # noqa: E402
from trl import TrlParser  # noqa: E402

from arena.config import DataArgs, ModelArgs, ScoreArgs, TrainConfig  # noqa: E402
from arena.io import atomic_open, write_json  # noqa: E402
from bench.common import ROOT, read_json  # noqa: E402

VARIANTS = {
    "token": [],
    "label": ["--loss", "label"],
    "label+swap": ["--loss", "label", "--swap_augment"],
    "+distill(run)": ["--loss", "label", "--swap_augment", "--teacher_file", "{teacher}"],
    "+distill(truth)": ["--loss", "label", "--swap_augment", "--teacher_file", "{truth}"],
}
CONFIG = "configs/demo.yaml"
TEACHER_OF = "label+swap"  # the run whose predictions the +distill(run) variant learns from


def build(folder: str, rows: int) -> tuple[str, str]:
    """The demo data and the tiny model (its tokenizer is trained on that data) in `folder`; returns (train.csv,
    model folder). Kept from an earlier start (the reused runs were trained on them)."""
    data, model = os.path.join(folder, "data"), os.path.join(folder, "model")
    if os.path.exists(os.path.join(model, "config.json")):
        return os.path.join(data, "train.csv"), model
    for args in (["data/make_demo_data.py", "--out", data, "--rows", str(rows), "--test_rows", "0", "--seed", "0"],
                 ["tools/make_random_model.py", "--out", model, "--corpus", os.path.join(data, "train.csv")]):
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(data, "train.csv"), model


def train(argv: list[str]) -> dict:
    parser = TrlParser((DataArgs, ModelArgs, ScoreArgs, TrainConfig))
    train_unsloth.main(*parser.parse_args_and_config(argv))
    run = argv[argv.index("--output_dir") + 1]
    with open(os.path.join(run, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def finished(run: str) -> dict | None:
    """The metrics of a run folder already trained (a stopped benchmark, or seeds run side by side), else None."""
    return read_json(os.path.join(run, "metrics.json"), None)


def teacher_predictions(run: str, data: str, out: str) -> str:
    """infer.py with the run's adapter on every row of the data: the +distill(run) variant's teacher file."""
    parser = TrlParser((infer.InferArgs, infer.ScoreArgs))
    infer.main(*parser.parse_args_and_config(["--adapter", run, "--data_file", data, "--output_file", out]))
    return out


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(result: dict) -> str:
    lines = ["| variant | held-out log loss: median (range) | Bayes limit: median | gap: median (range) | "
             "seeds under 0.8 | train seconds: median |", "|---|---|---|---|---|---|"]
    for v in result["variants"]:
        ll, gap = v["log_loss"], v["gap"]
        lines.append(
            f"| {v['name']} | {ll['median']:.4f} ({ll['min']:.4f}-{ll['max']:.4f}) | {v['bayes_limit']['median']:.4f} "
            f"| {gap['median']:.4f} ({gap['min']:.4f}-{gap['max']:.4f}) | {v['under_0.8']}/{len(v['seeds'])} "
            f"| {v['train_seconds']['median']:.0f} |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v["name"] for v in result["variants"]]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for x, v in enumerate(result["variants"]):
        ax.plot([x] * len(v["per_seed"]), [r["log_loss"] for r in v["per_seed"]], "o", color="tab:blue",
                alpha=0.7, label="held-out log loss, one seed" if x == 0 else None)
        ax.plot([x - 0.3, x + 0.3], [v["log_loss"]["median"]] * 2, "-", color="tab:blue",
                label="median" if x == 0 else None)
        ax.plot([x] * len(v["per_seed"]), [r["bayes_limit"] for r in v["per_seed"]], "_", color="black",
                markersize=14, label="Bayes limit of that seed's held-out rows" if x == 0 else None)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("held-out log loss")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    smoke = " (smoke: not a measurement)" if result["smoke"] else ""
    ax.set_title(f"demo data, tiny Llama, {result['steps']} steps, {len(result['seeds'])} seeds{smoke}", fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "quality"), help="data, model and run folders")
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "quality_cpu.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "quality_cpu.png"))
    parser.add_argument("--smoke", action="store_true", help="1 seed, 3 steps, 300 rows (CI)")
    parser.add_argument("extra", nargs="*", help="more train_unsloth.py flags for every run, after --")
    args = parser.parse_args()
    os.chdir(ROOT)  # the configs and prompts are named relative to the project
    steps = []
    if args.smoke:
        args.seeds, args.rows, steps = args.seeds[:1], 300, ["--max_steps", "3", "--logging_steps", "1"]
    with open(os.path.join(ROOT, CONFIG), encoding="utf-8") as f:
        max_steps = yaml.safe_load(f)["max_steps"]
    for flags in (steps, args.extra):
        if "--max_steps" in flags:
            max_steps = int(flags[flags.index("--max_steps") + 1])
    if "+distill(run)" in args.variants and TEACHER_OF not in args.variants:
        parser.error(f"+distill(run) learns from the {TEACHER_OF} run: keep that variant")
    start = time.time()
    data, model = build(args.out, args.rows)
    truth = os.path.join(os.path.dirname(data), "truth.csv")
    per_seed = {name: [] for name in args.variants}
    for seed in args.seeds:
        teacher = None
        for name in args.variants:
            run = os.path.join(args.out, f"seed{seed}", name)
            flags = [f.format(teacher=teacher, truth=truth) for f in VARIANTS[name]]
            metrics = finished(run) or train(["--config", CONFIG, "--model", model, "--train_file", data, "--seed",
                                              str(seed), "--output_dir", run, *steps, *flags, *args.extra])
            per_seed[name].append({"seed": seed, **{k: metrics[k] for k in
                                   ("log_loss", "bayes_limit", "gap", "accuracy", "n", "train_loss", "train_seconds")}})
            print(f"quality: seed {seed} {name}: log loss {metrics['log_loss']:.4f} (Bayes limit "
                  f"{metrics['bayes_limit']:.4f}, gap {metrics['gap']:.4f})", flush=True)
            if name == TEACHER_OF:
                teacher = os.path.join(run, "teacher", "train_predictions.csv")
                if not os.path.exists(teacher):
                    teacher_predictions(run, data, teacher)
    result = {
        "device": "cpu", "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "smoke": args.smoke,
        "seeds": args.seeds, "steps": max_steps, "rows": args.rows, "config": CONFIG, "extra_flags": args.extra,
        "variants": [{
            "name": name, "flags": VARIANTS[name], "seeds": args.seeds, "per_seed": runs,
            **{key: summary([r[key] for r in runs]) for key in ("log_loss", "bayes_limit", "gap", "train_seconds")},
            "under_0.8": sum(r["log_loss"] < 0.8 for r in runs),
        } for name, runs in per_seed.items()],
        "wall_seconds": time.time() - start,
        "command": "python " + " ".join(sys.argv),
    }
    write_json(args.results, result)
    plot(result, args.plot)
    print(table(result))
    print(f"wrote {args.results} and {args.plot} in {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
