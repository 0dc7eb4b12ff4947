"""Markdown tables of the benchmark results, as docs/BENCHMARKS.md shows them (the scripts print them too).

    python bench/report.py                # bench/results/{train,train_max_len,infer}_gpu.json, e2e_metrics.json
    python bench/report.py --cpu_smoke    # the *_cpu_smoke.json files
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import ROOT, read_json  # noqa: E402

PATHS = ("unsloth", "baseline")


def show(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def train_table(records: list) -> str:
    lines = ["| device | seq_len | rows: mean tokens | unsloth tokens/s | baseline tokens/s | speedup | "
             "unsloth peak GiB | baseline peak GiB | memory ratio | unsloth MFU | baseline MFU | same batches |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        rows = next((r[p]["row_tokens"]["mean"] for p in PATHS if "row_tokens" in r.get(p, {})), None)
        lines.append(
            f"| {r['device']} | {r['seq_len']} | {show(rows, '.0f')} | {show(r['unsloth_tokens_per_s'], '.1f')} | "
            f"{show(r['baseline_tokens_per_s'], '.1f')} | {show(r.get('speedup'))} | {show(r['unsloth_peak_gib'])} | "
            f"{show(r['baseline_peak_gib'])} | {show(r.get('memory_ratio'))} | {show(r['unsloth_mfu'], '.3f')} | "
            f"{show(r['baseline_mfu'], '.3f')} | {r.get('same_batches', '—')} |")
    return "\n".join(lines)


def max_len_table(records: list) -> str:
    lines = ["| device | path | longest row at batch 1 (tokens) | first length that failed | search ended by | "
             "trials (length: fits, seconds) |", "|---|---|---|---|---|---|"]
    for r in records:
        for p in PATHS:
            d = r.get(p, {})
            trials = ", ".join(f"{t['length']}: {'yes' if t['fits'] else 'OOM'}, {t['seconds']:.0f} s"
                               for t in d.get("trials", []))
            lines.append(f"| {r['device']} | {p} | {show(d.get('max_len'), 'd')} | {show(d.get('first_failed'), 'd')} | "
                         f"{d.get('stopped') or '—'} | {trials or '—'} |")
    return "\n".join(lines)


def infer_table(result: dict) -> str:
    if not result:
        return "(no results)"
    n = result.get("lengths", {})
    lines = [f"Device {result['device']}; {result['n_pairs']} pairs under a budget of {result['max_length']} tokens "
             f"each, rendered lengths mean {n.get('mean')}, p50 {n.get('p50')}, p90 {n.get('p90')}, max {n.get('max')}; "
             f"measured matmul {result['matmul_tflops']:.3g} TFLOP/s ({result['matmul_dtype']}).", "",
             f"**naive {show(result.get('naive_pairs_per_s'))} pairs/s, ours {show(result.get('ours_pairs_per_s'))} "
             f"pairs/s: {show(result.get('speedup'))}x** (4-bit, no TTA). Best token budget: "
             f"{result.get('best_max_tokens')}. Largest difference between naive and ours probabilities: "
             + ", ".join(f"{k} {v:.2g} (over {result.get('max_abs_diff_pairs', {}).get(k)} pairs)"
                         for k, v in result.get("max_abs_diff", {}).items()) + ".", "",
             "| weights (loaded as) | method | TTA | budget (tokens) or batch (rows) | pairs | pairs/s | "
             "pairs/s vs 4-bit ours | real tokens | padded tokens | peak GiB | achieved TFLOP/s | roofline fraction | "
             "logits positions |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    reference = result.get("ours_pairs_per_s")  # 4-bit, no TTA
    for r in result.get("runs", []):
        size = r.get("max_tokens") if r["method"] != "naive" else f"{r.get('batch_size')} rows"
        if r.get("oom"):
            lines.append(f"| {r['weights']} ({r['weights_loaded']}) | {r['method']} | {r['tta']} | {size} | "
                         f"{r['n_pairs']} | out of memory | | | | | | | |")
            continue
        lines.append(f"| {r['weights']} ({r['weights_loaded']}) | {r['method']} | {r['tta']} | {size} | {r['n_pairs']} "
                     f"| {r['pairs_per_s']:.2f} | {show(reference and r['pairs_per_s'] / reference)} | "
                     f"{r['real_tokens']} | {r['padded_tokens']} | {r['peak_gib']:.2f} | "
                     f"{r['achieved_tflops']:.3g} | {r['roofline_fraction']:.3f} | {r['logits_positions_max']} |")
    return "\n".join(lines)


def product_line(run: dict) -> str:
    """The product's own GPU run (train_unsloth.py's metrics.json, copied as e2e_metrics.json)."""
    if not run:
        return "(no product run)"
    return (f"train_unsloth.py: {run['train_rows']} training rows in {run['train_seconds']:.1f} s (train loss "
            f"{run['train_loss']:.3f}), then {run['n']} held-out rows scored: log loss {run['log_loss']:.4f}, accuracy "
            f"{run['accuracy']:.3f}, world size {run['world_size']}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu_smoke", action="store_true")
    args = parser.parse_args()
    tag = "cpu_smoke" if args.cpu_smoke else "gpu"
    results = os.path.join(ROOT, "bench", "results")
    print(train_table(read_json(os.path.join(results, f"train_{tag}.json"), [])), end="\n\n")
    print(max_len_table(read_json(os.path.join(results, f"train_max_len_{tag}.json"), [])), end="\n\n")
    print(infer_table(read_json(os.path.join(results, f"infer_{tag}.json"), {})))
    if not args.cpu_smoke:
        print("\n" + product_line(read_json(os.path.join(results, "e2e_metrics.json"), {})))


if __name__ == "__main__":
    main()
