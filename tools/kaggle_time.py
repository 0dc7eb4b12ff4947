"""How long scoring 25,000 Kaggle test rows takes on two T4s, on paper: the H100's measured scoring rate
(bench/results/infer_gpu.json) carried to a T4 by the two GPUs' datasheet float16 throughput, for each config in
configs/, with and without swap TTA. An estimate, to be replaced by a measurement the day a T4 is available
(docs/kaggle.md, "How long it takes", says why compute bounds it and what the public notebooks measured).

    python tools/kaggle_time.py                  # the table in docs/kaggle.md
    python tools/kaggle_time.py --tokens 1000    # another mean row length
"""

from __future__ import annotations

import argparse
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# datasheet figures: dense float16/bfloat16 tensor-core FLOP/s and memory bandwidth (bytes/s)
H100_SXM = {"flops": 989e12, "bandwidth": 3.35e12}  # the H100 80GB HBM3 of the measurements is the SXM5 part
T4 = {"flops": 65e12, "bandwidth": 320e9, "memory_gib": 16}
# The scoring run whose rate is carried over: infer.py's GPU default budget (16384 tokens a batch), 4-bit weights
MEASURED = {"method": "sweep", "max_tokens": 16384, "weights": "4bit"}
# Each config's model as its config.json gives it: hidden size, MLP size, layers, query and key/value heads, head
# size, vocabulary; Qwen2.5 has biases on q, k and v, Gemma-2 four norms a layer (the others two)
MODELS = {
    "llama3-8b-instruct": dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, head_dim=128,
                               vocab=128_256, qkv_bias=False, norms=2),
    "qwen2.5-7b-instruct": dict(hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, head_dim=128,
                                vocab=152_064, qkv_bias=True, norms=2),
    "gemma-2-9b-it": dict(hidden=3584, intermediate=14336, layers=42, heads=16, kv_heads=8, head_dim=256,
                          vocab=256_000, qkv_bias=False, norms=4),
}
# Mean tokens a row of the LMSYS test set at max_length 3072, prompt template included: a public data report on
# 51,729 rows of the Kaggle train set (PredictBeforeExecute's, for lmsys-chatbot-arena) gives about 54 words per
# prompt and 205 words (1,380 characters) per answer, so about 3,100 characters a row, 700-800 tokens at 4
# characters a token, plus about 70 of the template; the 3072 cap trims the long tail by a little. Uncertain by a
# quarter either way; the time is proportional to it.
TOKENS = 800
# The public notebooks' measured times on two T4s (one model per GPU, rows sorted by length), for comparison
PUBLIC = {
    "Gemma-2-9B 4-bit, 2,048 tokens, batch 4": {"model": "gemma-2-9b-it", "rows_per_s": 1.7},
    "Llama-3-8B 8-bit (10k rows in 40 minutes; 65 unsorted)": {"model": "llama3-8b-instruct",
                                                               "rows_per_s": 10_000 / 2400},
}
ROWS = 25_000
LOAD_MINUTES = 5  # loading the model in each process, unsloth's compile, reading the data: a guess, not measured


def measured_record(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    run = next(r for r in record["runs"] if all(r.get(k) == v for k, v in MEASURED.items()))
    return {**run, "device": record["device"], "params_body": record["params_body"]}


def body_params(m: dict) -> int:
    """Parameters of the transformer body: every layer's attention, MLP and norms, and the final norm (no
    embeddings, no LM head): bench/infer_speed.py's params_body."""
    q, kv = m["heads"] * m["head_dim"], m["kv_heads"] * m["head_dim"]
    attention = m["hidden"] * (q + 2 * kv) + q * m["hidden"] + (q + 2 * kv if m["qkv_bias"] else 0)
    layer = attention + 3 * m["hidden"] * m["intermediate"] + m["norms"] * m["hidden"]
    return m["layers"] * layer + m["hidden"]


def row_flops(m: dict, tokens: float, square_ratio: float) -> float:
    """Useful forward FLOPs of one row of `tokens` tokens, as bench/infer_speed.py counts them: the body's matmuls,
    the LM head at the last position, causal attention (QK^T and PV). `square_ratio`: E[L^2] / E[L]^2."""
    return (2 * body_params(m) * tokens + 2 * m["hidden"] * m["vocab"]
            + 2 * m["layers"] * m["heads"] * m["head_dim"] * square_ratio * tokens**2)


def estimate(tokens: float = TOKENS, results: str = os.path.join(ROOT, "bench", "results", "infer_gpu.json")) -> dict:
    run = measured_record(results)
    h100_fraction = run["achieved_tflops"] * 1e12 / H100_SXM["flops"]  # of the datasheet, not of the measured matmul
    t4_flops = h100_fraction * T4["flops"]
    # the measured rows' spread of lengths, E[L^2] / E[L]^2, from the attention share of their counted FLOPs
    llama, mean = MODELS["llama3-8b-instruct"], run["real_tokens"] / run["sequences"]
    assert body_params(llama) == run["params_body"], "the measured model is not the Llama-3-8B shape"
    body_and_head = run["sequences"] * row_flops(llama, mean, 0)
    square_ratio = (run["useful_flop"] - body_and_head) / (run["sequences"] * (row_flops(llama, mean, 1)
                                                                               - row_flops(llama, mean, 0)))
    # what each public notebook's rate means in FLOP/s per T4, counted the same way
    public = {name: {**p, "t4_tflops": p["rows_per_s"] * row_flops(MODELS[p["model"]], tokens, square_ratio) / 2,
                     "hours": ROWS / p["rows_per_s"] / 3600} for name, p in PUBLIC.items()}
    slowest = min(p["t4_tflops"] for p in public.values())
    rows = {}
    for name, model in MODELS.items():
        seconds = ROWS * row_flops(model, tokens, square_ratio) / (2 * t4_flops)  # two T4s, one model each
        rows[name] = {"rows_per_s": ROWS / seconds, "hours": seconds / 3600, "hours_tta": 2 * seconds / 3600,
                      "hours_slow": seconds / 3600 * t4_flops / slowest}
    return {"run": run, "h100_fraction": h100_fraction, "t4_tflops": t4_flops, "square_ratio": square_ratio,
            "flop_ratio": H100_SXM["flops"] / T4["flops"], "bandwidth_ratio": H100_SXM["bandwidth"] / T4["bandwidth"],
            "tokens": tokens, "models": rows, "public": public, "slowest": slowest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, default=TOKENS, help="Mean tokens a row.")
    args = parser.parse_args()
    e = estimate(args.tokens)
    run = e["run"]
    print(f"measured: {run['device']}, {run['sequences']} rows (mean {run['real_tokens'] / run['sequences']:.0f} "
          f"tokens), budget {run['max_tokens']}: {run['pairs_per_s']:.2f} rows/s, {run['achieved_tflops']:.0f} "
          f"TFLOP/s = {e['h100_fraction']:.3f} of the H100 SXM's {H100_SXM['flops'] / 1e12:.0f}")
    print(f"datasheet ratios H100 SXM / T4: float16 FLOP/s {e['flop_ratio']:.1f}x, bandwidth "
          f"{e['bandwidth_ratio']:.1f}x; a T4 at the same fraction: {e['t4_tflops'] / 1e12:.1f} TFLOP/s")
    print(f"{ROWS} rows of {e['tokens']:.0f} tokens (E[L^2]/E[L]^2 {e['square_ratio']:.2f}, as measured), two T4s, "
          f"plus about {LOAD_MINUTES} minutes of loading\n")
    slow = f"at {e['slowest'] / 1e12:.1f} TFLOP/s a T4 (the slowest public notebook's)"
    print(f"| config (4-bit, max_length 3072) | rows/s | hours | hours with TTA | {slow}: hours | with TTA |")
    print("|---|---|---|---|---|---|")
    for name, m in e["models"].items():
        print(f"| `{name}` | {m['rows_per_s']:.1f} | {m['hours']:.1f} | {m['hours_tta']:.1f} | "
              f"{m['hours_slow']:.1f} | {2 * m['hours_slow']:.1f} |")
    print("\n| public notebook (two T4s, measured) | rows/s | hours for 25,000 rows | with TTA | TFLOP/s a T4 | "
          "of the datasheet |")
    print("|---|---|---|---|---|---|")
    for name, p in e["public"].items():
        print(f"| {name} | {p['rows_per_s']:.1f} | {p['hours']:.1f} | {2 * p['hours']:.1f} | "
              f"{p['t4_tflops'] / 1e12:.1f} | {p['t4_tflops'] / T4['flops']:.2f} |")


if __name__ == "__main__":
    main()
