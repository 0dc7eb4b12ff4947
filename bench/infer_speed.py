"""Scoring speed: pairs per second for N battles with an arena-like length mix. "ours" is the product's scoring,
arena.scoring.score_pairs (length-sorted token-budget batches, left padding, logits of the last position only);
"naive" is the loop it replaced (a fixed batch size, input order, right padding, the full [batch, length, vocab]
logits, then the last real position). Weights: 4-bit, 8-bit or 16-bit (arena.loading.load_model); with and without
swap TTA; and a sweep of the token budget.

    python bench/infer_speed.py --model runs/llama3-8b                          # the default plan, 2000 pairs
    python bench/infer_speed.py --model runs/llama3-8b --plan 4bit:ours 4bit:naive --skip_done
    python bench/infer_speed.py --cpu_smoke                                     # tiny model (CI)

--plan lists runs as WEIGHTS:METHOD[:tta], WEIGHTS one of 4bit, 8bit, bf16 and METHOD one of sweep (ours at each
--budgets on the first --sweep_pairs pairs, stopping at the first out-of-memory; the fastest is that weights'
budget), ours (at its weights' best budget, else the 4-bit one, else --max_tokens) or naive (--naive_batch_size).
Results go to --results after every run (so an interrupted run keeps them): the headline naive_pairs_per_s and
ours_pairs_per_s are 4-bit without TTA; max_abs_diff compares naive and ours probabilities of the same weights.

Roofline: useful forward FLOPs = 2 * params_body * real tokens + 2 * hidden * vocab * sequences (one position's
logits each) + 2 * layers * hidden * sum(length^2) (causal attention, QK^T and PV), over the run's seconds, as a
fraction of the dense matmul rate measured on the device in the same process (bf16 8192^3 on a GPU).
"""

import unsloth  # noqa: F401  (first: unsloth patches transformers on import)
from unsloth import FastLanguageModel

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch.nn.modules.module import register_module_forward_hook

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arena.errors import DataError  # noqa: E402
from arena.label_logits import LabelRows  # noqa: E402
from arena.prompts import DEFAULT_LABELS, Renderer, read_template  # noqa: E402
from arena.loading import load_model  # noqa: E402
from arena.run_folder import versions  # noqa: E402
from arena.swap import average_swapped  # noqa: E402
from arena.scoring import (  # noqa: E402
    pad_token_id, pair_sequences, score_pairs, token_budget_batches,
)
from bench.common import (  # noqa: E402
    ROOT, TEMPLATE, Deadline, LengthProfile, arena_like_pairs, build_tiny_model, chars_per_token, device_name,
    free_memory, is_oom, length_stats, matmul_tflops, param_counts, peak_memory, read_json, reset_peak_memory,
    synchronize, update_json, weight_format,
)
from bench.report import infer_table  # noqa: E402

WEIGHTS = {"4bit": dict(load_in_4bit=True), "8bit": dict(load_in_4bit=False, load_in_8bit=True),
           "bf16": dict(load_in_4bit=False)}
PLAN = ["4bit:sweep", "4bit:ours", "4bit:naive", "4bit:ours:tta", "bf16:ours", "bf16:ours:tta", "8bit:ours",
        "8bit:ours:tta"]  # in order of importance; runs of one weights together (one load)
SMOKE = dict(n_pairs=16, sweep_pairs=8, budgets=[1024, 4096], max_length=512, scale=0.15,
             plan=["4bit:sweep", "4bit:ours", "4bit:naive", "4bit:ours:tta", "4bit:naive:tta", "bf16:ours", "8bit:ours"])
WARM_PAIRS = 8
DIFF_PAIRS = 200  # pairs scored the other way to compare probabilities, when that way did not run in this process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Model folder (default with --cpu_smoke: a tiny random Llama, built).")
    parser.add_argument("--plan", nargs="+", help=f"Runs in order (default: {' '.join(PLAN)}).")
    parser.add_argument("--n_pairs", type=int, help="Battles to score (default 2000).")
    parser.add_argument("--max_length", type=int, help="Prompt budget per battle (default 3072, the product's).")
    parser.add_argument("--naive_batch_size", type=int, default=8)
    parser.add_argument("--max_tokens", type=int, default=16384, help="ours' budget when no sweep ran.")
    parser.add_argument("--budgets", type=int, nargs="+", help="Sweep (default 16384 ... 262144, doubling).")
    parser.add_argument("--sweep_pairs", type=int, help="Battles per sweep point (default 300).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", help="Default bench/results/infer_gpu.json.")
    parser.add_argument("--deadline", type=float, help="Unix time to finish by: runs that would not fit are skipped.")
    parser.add_argument("--load_estimate_s", type=float, default=150, help="Assumed model load time (deadline).")
    parser.add_argument("--skip_done", action="store_true", help="Skip runs --results already has.")
    parser.add_argument("--cpu_smoke", action="store_true", help="Tiny settings for a CPU (no timing meaning).")
    args = parser.parse_args()
    defaults = dict(n_pairs=2000, sweep_pairs=300, budgets=[16384 * 2**i for i in range(5)], max_length=3072,
                    scale=1.0, plan=PLAN)
    defaults.update(SMOKE if args.cpu_smoke else {})
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.results = args.results or os.path.join(ROOT, "bench", "results",
                                                "infer_cpu_smoke.json" if args.cpu_smoke else "infer_gpu.json")
    try:
        runs = [parse_run(item) for item in args.plan]
    except ValueError as e:
        parser.error(str(e))
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as scratch:
        if args.model is None:
            if not args.cpu_smoke:
                parser.error("--model is required (or --cpu_smoke)")
            args.model = build_tiny_model(scratch)
        errors = Bench(args).run(runs)
    print("\n" + infer_table(read_json(args.results, {})))
    if errors:
        sys.exit("failed: " + "; ".join(errors))


def parse_run(item: str) -> tuple[str, str, bool]:
    parts = item.split(":")
    if len(parts) not in (2, 3) or parts[0] not in WEIGHTS or parts[1] not in ("sweep", "ours", "naive") or (
        len(parts) == 3 and parts[2] != "tta"
    ):
        raise ValueError(f"--plan item {item!r}: expected WEIGHTS:METHOD[:tta] ({'/'.join(WEIGHTS)}, "
                         "sweep/ours/naive)")
    return parts[0], parts[1], len(parts) == 3


class Bench:
    def __init__(self, args):
        self.args = args
        self.deadline = Deadline(args.deadline)
        self.device = device_name()
        self.pairs = None
        self.probs = {}  # (weights, method, tta) -> probabilities of this process's full runs
        self.padded_tokens_per_s = None  # the best rate seen, to guess whether a run still fits the deadline
        self.errors = []
        setup = {"device": self.device, "versions": versions(), **matmul_tflops(), **param_counts(args.model)}
        self.setup = setup

        def start(results: dict) -> None:
            if results.get("device") != self.device:
                results.clear()
            results.update({"device": self.device, "n_pairs": args.n_pairs, "max_length": args.max_length, **setup})
            results.setdefault("runs", [])
            results.setdefault("best_max_tokens", {})
            results.setdefault("max_abs_diff", {})

        update_json(args.results, start, {})

    def run(self, runs: list[tuple[str, str, bool]]) -> list[str]:
        groups = []  # consecutive runs of the same weights share one load
        for run in runs:
            if groups and groups[-1][0] == run[0]:
                groups[-1][1].append(run)
            else:
                groups.append((run[0], [run]))
        for weights, group in groups:
            todo = [r for r in group if not (self.args.skip_done and self.done(*r))]
            if not todo:
                continue
            if not self.deadline.allows(self.args.load_estimate_s):
                print(f"{weights}: skipped, {self.deadline.left():.0f} s left is too little to load the model")
                continue
            try:
                self.with_weights(weights, todo)
            except Exception as error:  # noqa: BLE001  (one weights' failure should not lose the others' runs)
                if isinstance(error, DataError):
                    raise
                self.errors.append(f"{weights}: {type(error).__name__}: {error}")
                print(f"{weights}: failed: {type(error).__name__}: {error}", flush=True)
            free_memory()
        return self.errors

    def done(self, weights: str, method: str, tta: bool) -> bool:
        results = read_json(self.args.results, {})
        if method == "sweep":
            return weights in results.get("best_max_tokens", {})
        return any(r["weights"] == weights and r["method"] == method and r["tta"] == tta
                   and r["n_pairs"] == self.args.n_pairs for r in results.get("runs", []))

    def with_weights(self, weights: str, runs: list[tuple[str, str, bool]]) -> None:
        began = time.time()
        model, tokenizer = load_model(self.args.model, self.args.max_length, **WEIGHTS[weights])
        FastLanguageModel.for_inference(model)
        loaded = {"weights": weights, "weights_loaded": weight_format(model), "load_seconds": time.time() - began}
        print(f"{weights}: loaded in {loaded['load_seconds']:.0f} s as {loaded['weights_loaded']}", flush=True)
        renderer = Renderer(tokenizer, read_template(TEMPLATE), DEFAULT_LABELS, self.args.max_length)
        if self.pairs is None:  # the same battles for every weights (one tokenizer)
            profile = LengthProfile(scale=self.args.scale)
            self.pairs = arena_like_pairs(self.args.n_pairs, self.args.seed, chars_per_token(tokenizer), profile)
            lengths = [len(r.ids) for r in renderer.render_many(self.pairs)]
            update_json(self.args.results, lambda r: r.update(lengths=length_stats(lengths)), {})
        positions, head = [], model.get_output_embeddings()  # ours swaps the head for its label rows (LabelRows)
        hook = register_module_forward_hook(lambda m, i, o: positions.append(o.shape[1])
                                            if m is head or isinstance(m, LabelRows) else None)
        try:
            for i, (_, method, tta) in enumerate(runs):
                if method == "sweep":
                    self.sweep(model, renderer, loaded, positions)
                else:
                    later = {(m, t) for _, m, t in runs[i + 1 :]}
                    self.one(model, renderer, loaded, positions, method, tta, later)
        finally:
            hook.remove()
        del model

    def budget(self, weights: str) -> int:
        best = read_json(self.args.results, {}).get("best_max_tokens", {})
        return best.get(weights) or best.get("4bit") or self.args.max_tokens

    def scorer(self, model, renderer, method: str, tta: bool, max_tokens: int):
        if method == "naive":
            return lambda pairs: naive_scores(model, renderer, pairs, self.args.naive_batch_size, tta)
        return lambda pairs: score_pairs(model, renderer, pairs, max_tokens, tta)

    def one(self, model, renderer, loaded: dict, positions: list, method: str, tta: bool, later: set) -> None:
        weights, max_tokens = loaded["weights"], self.budget(loaded["weights"])
        work = self.work(renderer, self.pairs, method, tta, max_tokens)
        guess = self.guess_seconds(work, method)
        if not self.deadline.allows(guess):
            print(f"{weights} {method} tta={tta}: skipped, about {guess:.0f} s needed, "
                  f"{self.deadline.left():.0f} s left")
            return
        score = self.scorer(model, renderer, method, tta, max_tokens)
        record, probs = self.timed(score, self.pairs, work, positions)
        record.update(loaded, method=method, tta=tta, n_pairs=len(self.pairs),
                      **({"batch_size": self.args.naive_batch_size} if method == "naive" else {"max_tokens": max_tokens}))
        self.probs[(weights, method, tta)] = probs
        # naive and ours must give the same probabilities: on every pair when both run here, else on a sample
        other_method = "ours" if method == "naive" else "naive"
        other = self.probs.get((weights, other_method, tta))
        diff = None
        if other is not None or (other_method, tta) not in later:
            compared = len(self.pairs) if other is not None else min(DIFF_PAIRS, len(self.pairs))
            if other is None:
                other = self.scorer(model, renderer, other_method, tta, max_tokens)(self.pairs[:compared])
            diff = (float(np.abs(other[:compared] - probs[:compared]).max()), compared)
        self.save(record, diff_key=f"{weights}{':tta' if tta else ''}", diff=diff)
        print(f"{weights} {method} tta={tta}: {record['pairs_per_s']:.2f} pairs/s "
              f"({record['roofline_fraction']:.3f} of the matmul roofline), peak {record['peak_gib']:.2f} GiB"
              + ("" if diff is None else f", max |naive - ours| {diff[0]:.2e} over {diff[1]} pairs"), flush=True)

    def sweep(self, model, renderer, loaded: dict, positions: list) -> None:
        pairs = self.pairs[: self.args.sweep_pairs]
        best = None
        for max_tokens in sorted(self.args.budgets):
            work = self.work(renderer, pairs, "ours", False, max_tokens)
            if not self.deadline.allows(self.guess_seconds(work, "ours")):
                print(f"sweep: {max_tokens} skipped (deadline)")
                break
            record = {**loaded, "method": "sweep", "tta": False, "n_pairs": len(pairs), "max_tokens": max_tokens}
            try:
                timed, _ = self.timed(self.scorer(model, renderer, "ours", False, max_tokens), pairs, work, positions)
                record.update(timed)
            except Exception as error:  # noqa: BLE001  (out of memory ends the sweep; anything else goes up)
                if not is_oom(error):
                    raise
                record["oom"] = True
            free_memory()
            self.save(record)
            if record.get("oom"):
                print(f"sweep: {max_tokens} tokens ran out of memory", flush=True)
                break
            print(f"sweep: {max_tokens} tokens: {record['pairs_per_s']:.2f} pairs/s, peak {record['peak_gib']:.2f} GiB",
                  flush=True)
            if best is None or record["pairs_per_s"] > best[1]:
                best = (max_tokens, record["pairs_per_s"])
        if best is not None:
            update_json(self.args.results, lambda r: r["best_max_tokens"].update({loaded["weights"]: best[0]}), {})

    def work(self, renderer, pairs, method: str, tta: bool, max_tokens: int) -> dict:
        """Token counts of a run: real, padded (what the model computes), and the useful FLOPs (module doc)."""
        lengths = [len(seq) for seq in pair_sequences(renderer, pairs, tta)]
        if method == "naive":
            size = self.args.naive_batch_size
            padded = sum(len(lengths[i : i + size]) * max(lengths[i : i + size]) for i in range(0, len(lengths), size))
        else:
            padded = sum(len(b) * lengths[b[0]] for b in token_budget_batches(lengths, max_tokens))
        s = self.setup
        flop = (2 * s["params_body"] * sum(lengths) + 2 * s["hidden_size"] * s["vocab_size"] * len(lengths)
                + 2 * s["num_hidden_layers"] * s["hidden_size"] * sum(n * n for n in lengths))
        return {"sequences": len(lengths), "real_tokens": sum(lengths), "padded_tokens": padded, "useful_flop": flop}

    def guess_seconds(self, work: dict, method: str) -> float:
        if self.padded_tokens_per_s is None:
            return 0.0
        return work["padded_tokens"] / self.padded_tokens_per_s * (2.0 if method == "naive" else 1.5) * 1.2

    def timed(self, score, pairs, work: dict, positions: list) -> tuple[dict, np.ndarray]:
        score(pairs[:WARM_PAIRS])  # first calls allocate and pick kernels
        positions.clear()
        reset_peak_memory()
        synchronize()
        began = time.perf_counter()
        probs = score(pairs)
        synchronize()
        seconds = time.perf_counter() - began
        achieved = work["useful_flop"] / seconds / 1e12
        self.padded_tokens_per_s = max(self.padded_tokens_per_s or 0, work["padded_tokens"] / seconds)
        record = {"seconds": seconds, "pairs_per_s": len(pairs) / seconds, **work, "achieved_tflops": achieved,
                  "roofline_fraction": achieved / self.setup["matmul_tflops"], "logits_positions_max": max(positions, default=None),
                  **peak_memory()}
        return record, probs

    def save(self, record: dict, diff_key: str | None = None, diff: tuple[float, int] | None = None) -> None:
        def change(results: dict) -> None:
            key = lambda r: (r["weights"], r["method"], r["tta"], r["n_pairs"], r.get("max_tokens"))  # noqa: E731
            results["runs"] = [r for r in results["runs"] if key(r) != key(record)] + [record]
            if diff is not None:
                results["max_abs_diff"][diff_key], results.setdefault("max_abs_diff_pairs", {})[diff_key] = diff
            headline = {m: next((r for r in results["runs"] if (r["weights"], r["method"], r["tta"], r["n_pairs"])
                                 == ("4bit", m, False, self.args.n_pairs)), None) for m in ("naive", "ours")}
            for method, run in headline.items():
                results[f"{method}_pairs_per_s"] = run and run["pairs_per_s"]
            if headline["naive"] and headline["ours"]:
                results["speedup"] = headline["ours"]["pairs_per_s"] / headline["naive"]["pairs_per_s"]

        update_json(self.args.results, change, {})


@torch.inference_mode()
def naive_scores(model, renderer: Renderer, pairs, batch_size: int, tta: bool) -> np.ndarray:
    """The straightforward loop: batches of `batch_size` in input order, right padding, the model's full logits,
    then the last real position's logits over the label tokens."""
    seqs = pair_sequences(renderer, pairs, tta)
    pad_id = pad_token_id(renderer.tokenizer)
    device = next(model.parameters()).device
    label_index = torch.tensor(renderer.label_ids, device=device)
    probs = np.zeros((len(seqs), 3))
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start : start + batch_size]
        input_ids = torch.full((len(batch), max(map(len, batch))), pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(batch):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        last = logits[torch.arange(len(batch), device=device), mask.sum(1).to(device) - 1]
        probs[start : start + len(batch)] = torch.softmax(last.index_select(-1, label_index).float(), -1).cpu()
    return average_swapped(probs, len(pairs)) if tta else probs


if __name__ == "__main__":
    main()
