"""Data preparation speed on CPU: read a Kaggle-sized arena CSV and render every pair with a real tokenizer.

    python bench/prepare_data.py                 # 57,477 rows (the Kaggle train size), Qwen2.5's tokenizer, 3072
    python bench/prepare_data.py --smoke         # 500 rows, prints the figures and writes no results file
    python bench/prepare_data.py --rows 10000 --tokenizer path/to/tokenizer-folder-or.tar.xz --max_length 2048

The rows are generated with a length profile like the Kaggle train.csv's: prompts a few hundred characters at the
median, answers about 1,300 with a long tail to tens of thousands; 13% multi-turn (up to 12 turns); a few null
and empty answers; a few lone surrogates; JSON cells with \\uXXXX escapes. They are written as a CSV to a temporary
folder, then two stages are timed: (a) reading it with arena.data.read_pairs, (b) rendering every pair with
arena.prompts.Renderer (the tokenizer encodes each chunk of pairs as one batch, on all cores). Results (rows/s per
stage, seconds, CPU seconds, the load average) go to bench/results/prepare_cpu.json.
"""

import argparse
import csv
import json
import math
import os
import platform
import random
import resource
import shutil
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from arena.data import read_pairs  # noqa: E402
from arena.io import atomic_open, write_json  # noqa: E402
from arena.prompts import DEFAULT_LABELS, Renderer, read_template  # noqa: E402

KAGGLE_ROWS = 57_477
DEFAULT_TOKENIZER = os.path.join(ROOT, "..", "shared", "tokenizers", "qwen2.5-instruct.tar.xz")
WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one have this from or had by "
    "not word but what some we can out other were all there when up use your how said an each she which do their "
    "time if will way about many then them write would like so these her long make thing see him two has look more "
    "day could go come did number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round man year came show "
    "every good me give our under name very through just form sentence great think say help low line differ turn "
    "cause much mean before move right boy old too same tell does set three want air well also play small end put "
    "home read hand port large spell add even land here must big high such follow act why ask men change went light "
    "However, therefore: example; function return value = 0; print(x) {} [] () # ## ** - 1. 2. 3. 42 3.14 2024 "
    "def class import numpy as np model data https://example.com/path?q=1 東京 データ 模型 😀 🚀 ✓ é ü ñ"
).split()


def text(rng: random.Random, corpus: str, length: int) -> str:
    start = rng.randrange(len(corpus) - length) if length < len(corpus) else 0
    return corpus[start : start + length]


def lognormal(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return min(cap, max(1, int(median * math.exp(rng.gauss(0, sigma)))))


def battle(rng: random.Random, corpus: str, row_id: int) -> list:
    turns = 1 if rng.random() < 0.87 else min(12, 2 + int(rng.expovariate(0.45)))
    prompt_chars = lognormal(rng, 250, 1.2, 40_000)
    answer_chars = [lognormal(rng, 1300, 0.8, 60_000) for _ in "ab"]
    if rng.random() < 0.002:  # the very long tail
        answer_chars[0] = rng.randint(60_000, 200_000)
    prompt = [text(rng, corpus, max(1, prompt_chars // turns)) for _ in range(turns)]
    a, b = ([text(rng, corpus, max(1, n // turns)) for _ in range(turns)] for n in answer_chars)
    for answers in (a, b):
        if rng.random() < 0.004:
            answers[-1] = rng.choice([None, ""])
    if rng.random() < 0.002:
        prompt[0] += " \ud83d"  # a lone surrogate, as in the Kaggle files
    label = rng.choices([0, 1, 2], weights=[35, 34, 31])[0]
    return [row_id, "model-x", "model-y", json.dumps(prompt), json.dumps(a), json.dumps(b),
            int(label == 0), int(label == 1), int(label == 2)]


def write_data(path: str, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]  # Zipf-like word frequencies
    corpus = " ".join(rng.choices(WORDS, weights, k=800_000))
    with atomic_open(path) as f:
        writer = csv.writer(f)
        writer.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b",
                         "winner_model_a", "winner_model_b", "winner_tie"])
        for i in range(rows):
            writer.writerow(battle(rng, corpus, 30_000 + i))


def load_tokenizer(source: str, folder: str):
    from transformers import AutoTokenizer

    if source.endswith((".tar.xz", ".tar.gz", ".tar")):
        with tarfile.open(source) as tar:
            names = {name.split("/")[0] for name in tar.getnames()}
            tar.extractall(folder, filter="data")
        (name,) = names
        source = os.path.join(folder, name)
    return AutoTokenizer.from_pretrained(source)


def length_profile(pairs) -> dict:
    """Characters per row's prompt and per answer (all turns), turns per row: what the generated data looks like."""

    def quantiles(values):
        return {q: int(np.percentile(values, int(q[1:]) if q != "max" else 100)) for q in ("p50", "p90", "p99", "max")}

    turns = np.array([len(p.prompt) for p in pairs])
    return {
        "prompt_chars": quantiles([sum(map(len, p.prompt)) for p in pairs]),
        "answer_chars": quantiles([sum(map(len, side)) for p in pairs for side in (p.response_a, p.response_b)]),
        "multi_turn_share": round(float((turns > 1).mean()), 3),
        "max_turns": int(turns.max()),
        "empty_answers": sum(not any(side) for p in pairs for side in (p.response_a, p.response_b)),
    }


def timed(stage):
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    result = stage()
    end = resource.getrusage(resource.RUSAGE_SELF)
    seconds = time.perf_counter() - start
    return result, seconds, end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=KAGGLE_ROWS)
    parser.add_argument("--smoke", action="store_true", help="500 rows; prints the figures, writes no results file")
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="a tokenizer folder, hub name or .tar.xz")
    parser.add_argument("--max_length", type=int, default=3072)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "prepare_cpu.json"))
    args = parser.parse_args()
    rows = 500 if args.smoke else args.rows

    folder = tempfile.mkdtemp(prefix="prepare-bench-")
    try:
        data = os.path.join(folder, "train.csv")
        write_data(data, rows, args.seed)
        renderer = Renderer(load_tokenizer(args.tokenizer, folder),
                            read_template(os.path.join(ROOT, "prompts", "two_conversations.txt")),
                            DEFAULT_LABELS, args.max_length)
        load_before = os.getloadavg()[0]
        pairs, read_s, read_cpu = timed(lambda: read_pairs(data))
        rendered, render_s, render_cpu = timed(lambda: [(len(r.ids), r.dropped_turns > 0, r.shortened_texts > 0)
                                                        for r in renderer.iter_render(pairs)])
        result = {
            "rows": len(pairs),
            "file_mb": round(os.path.getsize(data) / 2**20, 1),
            "profile": length_profile(pairs),
            "max_length": args.max_length,
            "tokenizer": os.path.basename(args.tokenizer),
            "read": {"seconds": round(read_s, 2), "rows_per_s": round(len(pairs) / read_s),
                     "cpu_seconds": round(read_cpu, 2)},
            "render": {"seconds": round(render_s, 2), "rows_per_s": round(len(pairs) / render_s),
                       "cpu_seconds": round(render_cpu, 2), "tokens": sum(n for n, _, _ in rendered),
                       "rows_dropping_turns": sum(d for _, d, _ in rendered),
                       "rows_shortened": sum(s for _, _, s in rendered)},
            "total_seconds": round(read_s + render_s, 2),
            "rows_per_s": round(len(pairs) / (read_s + render_s)),
            "cpu_count": os.cpu_count(),
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "(unset: on)"),
            "python": platform.python_version(),
            "command": "python " + " ".join(sys.argv),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if not args.smoke:
        write_json(args.output, result)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
