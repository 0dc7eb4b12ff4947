"""Training speed of the real model on a CPU: the demo-real recipe (configs/demo-real.yaml) for a few steps with
gradient checkpointing on (unsloth's) and off, in float32 and bfloat16; tokens/s from the trainer's runtime.

    python bench/train_speed_cpu.py                 # 12 steps each; bench/results/train_speed_cpu.json

The first --skip steps (start-up, compilation) are left out: each configuration trains --skip steps, then
--skip + --steps, and the speed is taken from the difference of the two runtimes. Every configuration sees the same
rows in the same order (seed 0), so their token counts are equal.
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_unsloth  # noqa: E402,F401  (imports unsloth first)

from arena.config import DataArgs, ModelArgs, ScoreArgs, TrainConfig, parse_settings  # noqa: E402
from arena.data import read_pairs  # noqa: E402
from arena.io import write_json  # noqa: E402
from bench.common import REAL_MODEL, ROOT  # noqa: E402

CONFIGS = [("float32", "unsloth"), ("float32", "false"), ("bfloat16", "unsloth"), ("bfloat16", "false")]


def runtime(steps: int, dtype: str, checkpointing: str, out: str) -> float:
    """Seconds of training for `steps` steps of the demo-real recipe."""
    settings = parse_settings((DataArgs, ModelArgs, ScoreArgs, TrainConfig), [
        "--config", "configs/demo-real.yaml", "--model", REAL_MODEL, "--output_dir", out, "--max_steps", str(steps),
        "--dtype", dtype, "--use_gradient_checkpointing", checkpointing, "--logging_steps", str(steps)])
    began = time.time()
    train_unsloth.main(*settings)
    return time.time() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "train_speed_cpu.json"))
    args = parser.parse_args()
    if not os.path.exists(os.path.join(REAL_MODEL, "config.json")):
        sys.exit(f"train speed: no model in {REAL_MODEL}; build it with `make real-model`")
    os.chdir(ROOT)
    from transformers import AutoTokenizer

    from arena.prompts import Renderer, read_template

    renderer = Renderer(AutoTokenizer.from_pretrained(REAL_MODEL), read_template("prompts/two_conversations.txt"),
                        max_length=320)
    rows = [len(r.ids) + 1 for r in renderer.render_many(read_pairs("data/llmeval2/train.csv"))]
    tokens_per_row = sum(rows) / len(rows)
    results = []
    for dtype, checkpointing in CONFIGS:
        out = os.path.join(ROOT, "runs", "train-speed-cpu", f"{dtype}-{checkpointing}")
        short = runtime(args.skip, dtype, checkpointing, out)
        long = runtime(args.skip + args.steps, dtype, checkpointing, out)
        seconds = (long - short) / args.steps
        results.append({"dtype": dtype, "gradient_checkpointing": checkpointing, "seconds_per_step": seconds,
                        "tokens_per_second": 4 * tokens_per_row / seconds})
        print(f"train speed: {dtype}, checkpointing {checkpointing}: {seconds:.2f} s a step, "
              f"{results[-1]['tokens_per_second']:.0f} tokens/s", flush=True)
    base = results[0]["tokens_per_second"]
    for r in results:
        r["vs_float32_checkpointed"] = r["tokens_per_second"] / base
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = sorted({flag for flag in f.read().split() if flag in ("avx512f", "avx512_bf16", "amx_bf16")})
    write_json(args.out, {"cpu_flags": flags, "steps": args.steps, "skipped": args.skip, "batch": 4,
                          "mean_tokens_per_row": tokens_per_row,
                          "cpu": platform.processor() or platform.machine(), "threads": os.environ.get(
                              "OMP_NUM_THREADS", str(os.cpu_count())), "results": results,
                          "command": "python " + " ".join(sys.argv)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
