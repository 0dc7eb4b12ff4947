"""Plots training throughput and peak memory against sequence length, both paths, from train_speed.py's results.

    python bench/plot_train.py                                                   # train_gpu.json -> docs/train_speed.png
    python bench/plot_train.py --results bench/results/train_cpu_smoke.json --out docs/train_speed_cpu_smoke.png

The fixed lengths are joined by lines; the arena-like mix is a separate marker at its mean row length. Each
unsloth point is labelled with its ratio to the baseline (speedup; memory ratio).
"""

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arena.io import atomic_open  # noqa: E402
from bench.common import ROOT, read_json  # noqa: E402

PATHS = {"unsloth": "unsloth (this project)", "baseline": "transformers + peft QLoRA"}


def size(n: int) -> str:
    return f"{n / 1e9:.2g}B" if n >= 1e9 else f"{n / 1e6:.2g}M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "train_gpu.json"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "train_speed.png"))
    args = parser.parse_args()
    records = read_json(args.results, [])
    if not records:
        sys.exit(f"{args.results}: no records")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for (path, label), color in zip(PATHS.items(), ("tab:green", "tab:gray")):
        fixed = sorted((r["seq_len"], r[path]) for r in records if r["seq_len"] != "mix" and r.get(path))
        mix = [r[path] for r in records if r["seq_len"] == "mix" and r.get(path)]
        for ax, key in zip(axes, ("tokens_per_s", "peak_gib")):
            ax.plot([n for n, _ in fixed], [d[key] for _, d in fixed], "o-", color=color, label=label)
            if mix:
                ax.plot([d["row_tokens"]["mean"] for d in mix], [d[key] for d in mix], "D", color=color,
                        markerfacecolor="white", label=f"{label}, arena-like mix (at its mean length)")
    for ax, key, ratio in zip(axes, ("tokens_per_s", "peak_gib"), ("speedup", "memory_ratio")):
        for r in records:
            if r.get(ratio) and r.get("unsloth"):
                x = r["unsloth"]["row_tokens"]["mean"] if r["seq_len"] == "mix" else r["seq_len"]
                ax.annotate(f"{r[ratio]:.2f}x", (x, r["unsloth"][key]), textcoords="offset points", xytext=(6, 6),
                            fontsize=8, color="tab:green")
    lengths = sorted({r["seq_len"] for r in records if r["seq_len"] != "mix"})
    titles = ("training throughput (real tokens/s)", "peak memory (GiB; on a GPU: max allocated)")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("tokens per row")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # room for the ratio labels
        ax.margins(x=0.15)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    devices = sorted({r["device"] for r in records})
    smoke = " (CPU smoke: tiny model, not a speed measurement)" if devices[0].startswith("cpu") else ""
    first = next(r[p] for r in records for p in PATHS if r.get(p) and "batch_size" in r[p])
    fig.suptitle(f"QLoRA training, {first['batch_size']} rows per step, {size(first['params_total'])} parameters: "
                 f"{', '.join(devices)}{smoke}\ngreen numbers: unsloth / baseline", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    with atomic_open(args.out, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
