"""Where a CPU's time goes with a real model: user and system seconds and page faults of whole `infer.py` and
`train_unsloth.py` runs, for 4-bit (NF4) and float32 weights and scoring batch budgets (`--score_max_tokens`).

    python tools/real_model.py                          # the model (`make real-model`)
    python bench/cpu_speed.py                           # scoring 80 LLMEval^2 rows at 1024 tokens; training
    python bench/cpu_speed.py --rows 40 --budgets 16384 4096 2048 --threads 2 --train_steps 0

Each setting runs in a fresh process (loading included, as a user runs it), one at a time; the child's resource
usage comes from os.wait4. Training runs `--max_steps 1` and `--max_steps 1 + --train_steps` (4 rows a step, 320
tokens) and reports their difference per step, so loading and saving cancel out. CPU seconds (user + system), not
wall time, are the figure to compare when other jobs share the machine. Results go to
bench/results/cpu_speed.json (merged: a rerun skips what it already measured with the same settings) and a table is
printed. Needs ../shared/data/llmeval2.csv (or --data, any arena-layout file) and the real model.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import REAL_DATA, REAL_MODEL, ROOT, check_real_inputs, read_json, update_json  # noqa: E402



def first_rows(data: str, n: int, out: str) -> None:
    with open(data, newline="", encoding="utf-8") as f, open(out, "w", newline="", encoding="utf-8") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, reader.fieldnames)
        writer.writeheader()
        for _, row in zip(range(n), reader):
            writer.writerow(row)


def usage_of(cmd: list[str], threads: int) -> dict:
    """Run `cmd` in a fresh process; its wall, user and system seconds, page faults and peak memory."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    began = time.time()
    child = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        sys.exit(f"cpu speed: failed: {' '.join(cmd)}\n{err[-2000:]}")
    return {"wall_s": round(time.time() - began, 1), "user_s": round(usage.ru_utime, 1),
            "sys_s": round(usage.ru_stime, 1), "minor_faults": usage.ru_minflt, "peak_rss_mib": usage.ru_maxrss // 1024}


def score(args, data: str, out: str, four_bit: bool, budget: int) -> dict:
    return usage_of([sys.executable, os.path.join(ROOT, "infer.py"), "--model", args.model, "--data_file", data,
                     "--output_file", out, "--max_length", str(args.max_length), "--score_max_tokens", str(budget),
                     "--load_in_4bit", str(four_bit).lower()], args.threads)


def train(args, data: str, out: str, four_bit: bool, steps: int) -> dict:
    return usage_of([sys.executable, os.path.join(ROOT, "train_unsloth.py"), "--model", args.model, "--train_file",
                     data, "--fold", "-1", "--output_dir", out, "--max_steps", str(steps), "--max_length", "320",
                     "--per_device_train_batch_size", "4", "--save_strategy", "no", "--report_to", "none",
                     "--load_in_4bit", str(four_bit).lower()], args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=REAL_DATA)
    parser.add_argument("--model", default=REAL_MODEL)
    parser.add_argument("--rows", type=int, default=80, help="rows scored (the file's first)")
    parser.add_argument("--max_length", type=int, default=1024, help="scoring budget per row")
    parser.add_argument("--budgets", type=int, nargs="+", default=[16384, 2048], help="--score_max_tokens values")
    parser.add_argument("--train_steps", type=int, default=8, help="training steps measured (0: no training)")
    parser.add_argument("--weights", nargs="+", default=["nf4", "float32"], choices=["nf4", "float32"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "cpu_speed.json"))
    args = parser.parse_args()
    check_real_inputs("cpu speed", args.data, args.model)
    name = os.path.basename(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "rows.csv")
        scored = os.path.join(tmp, "rows-scored.csv")
        first_rows(args.data, max(args.rows, 64), data)
        first_rows(args.data, args.rows, scored)
        jobs = []
        for weights in args.weights:
            four_bit = weights == "nf4"
            for budget in args.budgets:
                key = (f"score {weights} budget {budget} rows {args.rows} len {args.max_length} "
                       f"threads {args.threads} {name}")
                jobs.append((key, lambda fb=four_bit, b=budget, s=scored, k=key: score(
                    args, s, os.path.join(tmp, k.replace(" ", "-"), "sub.csv"), fb, b)))
            for steps in ((1, 1 + args.train_steps) if args.train_steps else ()):
                key = f"train {weights} steps {steps} batch 4 len 320 threads {args.threads} {name}"
                jobs.append((key, lambda fb=four_bit, n=steps, k=key: train(
                    args, data, os.path.join(tmp, k.replace(" ", "-")), fb, n)))
        for key, job in jobs:
            if key in read_json(args.results, {}):
                continue
            result = job()
            update_json(args.results, lambda done: done.__setitem__(key, result), {})
            print(f"{key}: {result}", flush=True)
    done = read_json(args.results, {})
    print("| run | wall s | user s | sys s | minor faults | peak RSS MiB |\n|---|---|---|---|---|---|")
    for key, r in done.items():
        print(f"| {key} | {r['wall_s']} | {r['user_s']} | {r['sys_s']} | {r['minor_faults']} | {r['peak_rss_mib']} |")
    for weights in args.weights:
        one = done.get(f"train {weights} steps 1 batch 4 len 320 threads {args.threads} {name}")
        more = done.get(f"train {weights} steps {1 + args.train_steps} batch 4 len 320 threads {args.threads} {name}")
        if one and more and args.train_steps:
            cpu = (more["user_s"] + more["sys_s"] - one["user_s"] - one["sys_s"]) / args.train_steps
            print(f"training, {weights}: {cpu:.2f} CPU s a step of 4 rows (difference of {1 + args.train_steps} "
                  "and 1 steps)")


if __name__ == "__main__":
    main()
