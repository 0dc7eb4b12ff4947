"""Training speed and peak memory, side by side: the unsloth path (this project's own code: arena.loading.load_model,
FastLanguageModel.get_peft_model, trl's SFTTrainer on rows from arena.prompts.training_columns) against a plain
transformers + peft + bitsandbytes 4-bit QLoRA baseline (SDPA attention, standard gradient checkpointing), with
the same model, LoRA settings, trainer arguments and batches.

    python bench/train_speed.py --model runs/llama3-8b --seq_lens 1024 2048 4096 mix        # both paths
    python bench/train_speed.py --model runs/llama3-8b --paths baseline --skip_done         # what is missing
    python bench/train_speed.py --model runs/llama3-8b --seq_lens --find_max_len            # longest at batch 1
    python bench/train_speed.py --cpu_smoke                                                 # tiny model (CI)

Each path runs in a process of its own: unsloth patches transformers and trl when imported, so the baseline's
process never imports it. Each process merges its figures into --results (one record per sequence length) as soon
as a length is done, so an interrupted run keeps what it measured; --skip_done leaves measured lengths alone.

Batches: rows rendered by arena.prompts (the product's renderer and training_columns: the label token is the
only trained token). A fixed length L renders long battles under a budget of L tokens; "mix" draws battles from
bench.common.LengthProfile under --mix_max_length. Rows are sorted by length, cut into batches of --batch_size,
and the batches shuffled with --seed; the trainer reads them in that order (sequential sampling), so both paths
see the same token ids in the same batches (their SHA-256 is recorded and compared).

Throughput: real (non-pad) tokens of the steps after --warmup_steps over their wall time, step end to step end
(everything the training loop does). Peak memory: torch.cuda.max_memory_allocated over the whole run at one
length, warm-up included (it allocates the optimizer state), weights included.
MFU = 6 * params_total * tokens_per_s / matmul_tflops: params_total is every parameter of the model's config,
the frozen base included; 6 FLOPs per parameter and token = forward 2 + forward again under gradient
checkpointing 2 + backward to the inputs 2 (the frozen base gets no weight gradients; LoRA's are negligible).
The denominator is the dense bf16 matmul rate measured on the device in the same process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402  (nothing here imports torch, transformers or unsloth)
    ROOT, TEMPLATE, Deadline, LengthProfile, arena_like_pairs, build_tiny_model, chars_per_token, device_name,
    free_memory, is_oom, length_stats, long_pairs, matmul_tflops, param_counts, peak_memory, read_json,
    reset_peak_memory, synchronize, update_json, weight_format,
)
from bench.report import max_len_table, train_table  # noqa: E402

PATHS = ("unsloth", "baseline")
RESULTS = os.path.join(ROOT, "bench", "results")
SMOKE = dict(seq_lens=["128", "mix"], batch_size=2, warmup_steps=1, steps=2, mix_max_length=256, mix_scale=0.15,
             max_len_start=512, max_len_cap=512, max_len_resolution=64)


# ---- the parent: settings, one child process per path, a summary


def main() -> None:
    if "--child" in sys.argv:  # a path's own process: settings come as JSON from the parent
        path, spec = sys.argv[sys.argv.index("--child") + 1], json.loads(sys.argv[sys.argv.index("--spec") + 1])
        return run_path(path, spec)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Model folder (default with --cpu_smoke: a tiny random Llama, built).")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--seq_lens", nargs="*", help="Lengths in tokens, or 'mix' (default 1024 2048 4096 mix).")
    parser.add_argument("--batch_size", type=int, help="Rows per step (default 4, the configs' batch size).")
    parser.add_argument("--warmup_steps", type=int, help="Untimed steps first (default 2).")
    parser.add_argument("--steps", type=int, help="Timed steps (default 8).")
    parser.add_argument("--mix_max_length", type=int, help="Token budget of the 'mix' rows (default 3072).")
    lora = "(default: arena.config.ModelArgs, as train_unsloth.py)"
    parser.add_argument("--lora_r", type=int, help=lora)
    parser.add_argument("--lora_alpha", type=int, help=lora)
    parser.add_argument("--lora_dropout", type=float, help=lora)
    parser.add_argument("--lora_target_modules", nargs="+", help=lora)
    parser.add_argument("--optim", help="Trainer optimizer (default adamw_8bit, as the model configs).")
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", help="Records per length (default bench/results/train_gpu.json).")
    parser.add_argument("--max_len_results", help="Default bench/results/train_max_len_gpu.json.")
    parser.add_argument("--find_max_len", action="store_true", help="Also find the longest row that trains at "
                        "batch 1: doubling from --max_len_start, then bisection to --max_len_resolution.")
    parser.add_argument("--max_len_start", type=int)
    parser.add_argument("--max_len_cap", type=int, help="Stop doubling here (default 131072).")
    parser.add_argument("--max_len_resolution", type=int)
    parser.add_argument("--deadline", type=float, help="Unix time to finish by: work that would not fit is skipped.")
    parser.add_argument("--load_estimate_s", type=float, default=150, help="Assumed model load time (deadline).")
    parser.add_argument("--skip_done", action="store_true", help="Skip lengths --results already has for a path.")
    parser.add_argument("--cpu_smoke", action="store_true", help="Tiny settings for a CPU (no timing meaning).")
    args = parser.parse_args()

    defaults = dict(seq_lens=["1024", "2048", "4096", "mix"], batch_size=4, warmup_steps=2, steps=8,
                    mix_max_length=3072, mix_scale=1.0, optim="adamw_8bit", max_len_start=4096, max_len_cap=131072,
                    max_len_resolution=2048)
    defaults.update(SMOKE if args.cpu_smoke else {})
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.warmup_steps < 1:
        parser.error("--warmup_steps must be at least 1 (the timed window starts at the end of a step)")
    tag = "cpu_smoke" if args.cpu_smoke else "gpu"
    args.results = args.results or os.path.join(RESULTS, f"train_{tag}.json")
    args.max_len_results = args.max_len_results or os.path.join(RESULTS, f"train_max_len_{tag}.json")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        if args.model is None:
            if not args.cpu_smoke:
                parser.error("--model is required (or --cpu_smoke)")
            args.model = build_tiny_model(scratch)
        failed = [path for path in args.paths if not run_child(path, args, spec_of(args), len(args.paths))]
    print("\n" + train_table(read_json(args.results, [])))
    if args.find_max_len:
        print("\n" + max_len_table(read_json(args.max_len_results, [])))
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (see above)")


def spec_of(args) -> dict:
    lengths = [int(s) for s in args.seq_lens if s != "mix"]
    if "mix" in args.seq_lens:
        lengths.append(args.mix_max_length)
    if args.find_max_len:
        lengths.append(args.max_len_cap)
    return {
        "model": os.path.abspath(args.model), "seq_lens": [s if s == "mix" else int(s) for s in args.seq_lens],
        "max_seq_length": max(lengths, default=1024), "batch_size": args.batch_size,
        "warmup_steps": args.warmup_steps, "steps": args.steps, "mix_max_length": args.mix_max_length,
        "mix_scale": args.mix_scale, "optim": args.optim, "learning_rate": args.learning_rate, "seed": args.seed,
        "lora": {"lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
                 "lora_target_modules": args.lora_target_modules},
        "results": os.path.abspath(args.results), "max_len_results": os.path.abspath(args.max_len_results),
        "find_max_len": args.find_max_len, "max_len_start": args.max_len_start, "max_len_cap": args.max_len_cap,
        "max_len_resolution": args.max_len_resolution, "load_estimate_s": args.load_estimate_s,
        "skip_done": args.skip_done, "cpu_smoke": args.cpu_smoke,
    }


def run_child(path: str, args, spec: dict, n_paths: int) -> bool:
    """One path in its own process. With a deadline, each path still to run gets an equal share of what is left
    (so that one call measures both paths at the first lengths rather than one path at all of them)."""
    remaining = n_paths - args.paths.index(path)
    spec["deadline"] = None if args.deadline is None else time.time() + (args.deadline - time.time()) / remaining
    print(f"==== {path}", flush=True)
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path, "--spec", json.dumps(spec)],
                            cwd=ROOT)
    return result.returncode == 0


# ---- one path, in its own process


def run_path(path: str, spec: dict) -> None:
    if path == "unsloth":
        import unsloth  # noqa: F401  (first: unsloth patches transformers and trl on import)
    import torch
    from transformers import AutoTokenizer

    from arena.config import ModelArgs
    from arena.loading import dtype_name
    from arena.run_folder import versions

    # LoRA settings not given: the product's defaults (so is the gradient checkpointing mode, "unsloth")
    spec["lora"] = vars(ModelArgs(**{k: v for k, v in spec["lora"].items() if v is not None}))
    deadline = Deadline(spec["deadline"])
    if not deadline.allows(spec["load_estimate_s"]):
        print(f"{path}: skipped, {deadline.left():.0f} s left is too little to load the model")
        return
    device = device_name()
    if path == "baseline" and not torch.cuda.is_available():
        torch_log_probs_for_cpu()
    setup = {"device": device, "versions": versions(), **matmul_tflops(), **param_counts(spec["model"])}
    loaded = time.time()
    model, tokenizer, float32_adapters, setup["how"] = (load_unsloth if path == "unsloth" else load_baseline)(spec)
    setup["load_seconds"] = round(time.time() - loaded, 1)
    setup["weights"] = weight_format(model)
    setup["dtype"] = dtype_name(model.dtype)
    setup["unsloth_imported"] = "unsloth" in sys.modules  # must be False on the baseline path
    print(f"{path}: loaded in {setup['load_seconds']} s, weights {setup['weights']}, "
          f"matmul {setup['matmul_tflops']:.3g} TFLOP/s measured", flush=True)
    # Rows are rendered with the folder's tokenizer as transformers loads it, on both paths, so that both train
    # on the same token ids whatever a loader does to its tokenizer; the trainer gets the path's own.
    rows_tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    cpt = chars_per_token(rows_tokenizer)
    seconds_per_token = None
    for seq_len in spec["seq_lens"]:
        if spec["skip_done"] and done(spec["results"], device, seq_len, path):
            print(f"{path} {seq_len}: already measured, skipped")
            continue
        rows, batches = training_rows(rows_tokenizer, spec, seq_len, cpt)
        planned = sum(len(rows["input_ids"][i]) for b in batches[: spec["warmup_steps"] + spec["steps"]] for i in b)
        if seconds_per_token is not None and not deadline.allows(1.5 * planned * seconds_per_token + 30):
            print(f"{path} {seq_len}: skipped, {deadline.left():.0f} s left is too little")
            continue
        try:
            details = measure(model, tokenizer, rows, batches, spec, float32_adapters, setup)
        except Exception as error:  # noqa: BLE001  (out of memory is a result; anything else goes up)
            if not is_oom(error):
                raise
            details = None
        if details is None:
            model.zero_grad(set_to_none=True)
            free_memory()
            merge_record(spec["results"], device, seq_len, path, {"out_of_memory": True, **setup})
            print(f"{path} {seq_len}: out of memory", flush=True)
            continue
        seconds_per_token = 1 / details["tokens_per_s"]
        merge_record(spec["results"], device, seq_len, path, details)
        print(f"{path} {seq_len}: {details['tokens_per_s']:.1f} tokens/s, peak {details['peak_gib']:.2f} GiB, "
              f"MFU {details['mfu']:.3f}", flush=True)
    if spec["find_max_len"] and spec["skip_done"] and max_len_done(spec["max_len_results"], device, path):
        print(f"{path}: longest row already found, skipped")
    elif spec["find_max_len"]:
        find_max_len(path, model, tokenizer, rows_tokenizer, spec, float32_adapters, setup, cpt, deadline)
    if path == "baseline":
        assert "unsloth" not in sys.modules, "the baseline's process imported unsloth"


def load_unsloth(spec: dict):
    """The product's loader and LoRA call, as train_unsloth.py makes them."""
    from unsloth import FastLanguageModel

    from arena.loading import load_model

    model, tokenizer = load_model(spec["model"], spec["max_seq_length"])
    lora = spec["lora"]
    model = FastLanguageModel.get_peft_model(
        model, r=lora["lora_r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
        target_modules=lora["lora_target_modules"], use_gradient_checkpointing=lora["use_gradient_checkpointing"],
        random_state=spec["seed"],
    )
    how = {"loader": "arena.loading.load_model (unsloth FastLanguageModel, 4-bit)", "lora": lora,
           "gradient_checkpointing": f"unsloth get_peft_model(use_gradient_checkpointing="
                                     f"{lora['use_gradient_checkpointing']!r})"}
    return model, tokenizer, True, how  # float32 adapters, as train_unsloth.py keeps them


def load_baseline(spec: dict):
    """Plain QLoRA: transformers + bitsandbytes NF4 (double quantization, bf16 compute), SDPA attention, peft's
    prepare_model_for_kbit_training (standard gradient checkpointing) and get_peft_model."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32  # a CPU emulates bf16 (unsloth's CPU loader takes float32)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], quantization_config=quantization, attn_implementation="sdpa", dtype=dtype,
        device_map={"": 0} if cuda else "cpu",
    )
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    torch.manual_seed(spec["seed"])
    lora = spec["lora"]
    model = get_peft_model(model, LoraConfig(
        r=lora["lora_r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
        target_modules=lora["lora_target_modules"], bias="none", task_type="CAUSAL_LM",
    ))
    how = {"loader": f"transformers AutoModelForCausalLM + BitsAndBytesConfig(nf4, double quant, {dtype} compute), "
                     "sdpa", "lora": {k: v for k, v in lora.items() if k != "use_gradient_checkpointing"},
           "gradient_checkpointing": "peft prepare_model_for_kbit_training(use_gradient_checkpointing=True)"}
    # trl's bf16 adapters where bf16 is native (plain trl), float32 where a CPU would emulate them
    return model, tokenizer, not (cuda and torch.cuda.is_bf16_supported()), how


def torch_log_probs_for_cpu() -> None:
    """trl 1.15's SFTTrainer takes every loss from a fused LM head whose kernel is Triton, with no CPU code;
    unsloth swaps in a PyTorch one when imported, which the baseline must not do. So on a CPU (the smoke mode
    only) the baseline gets the same outputs from plain PyTorch: log-softmax of the trained positions' logits."""
    import torch
    from trl.trainer import utils

    class TorchLogProbs:
        @staticmethod
        def apply(hidden, weight, bias, labels, temperature, chunk_size, softcap, logit_scale, outputs):
            logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
            if softcap:
                logits = softcap * torch.tanh(logits / softcap)
            logits = logits / temperature
            log_p = logits.log_softmax(-1)
            entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
            top1 = logits.argmax(-1) == labels if "is_top1" in outputs else None
            return log_p.gather(-1, labels[:, None]).squeeze(-1), entropy, None, None, top1

    utils._ChunkedLogProbFunction = TorchLogProbs


def training_rows(tokenizer, spec: dict, seq_len, cpt: float, n_rows: int | None = None, batch_size=None):
    """The rows (input_ids, labels) in training order, and the batches as row indices."""
    from arena.prompts import DEFAULT_LABELS, Renderer, read_template, training_columns

    batch_size = batch_size or spec["batch_size"]
    n_rows = n_rows or batch_size * (spec["warmup_steps"] + spec["steps"])
    if seq_len == "mix":
        renderer = Renderer(tokenizer, read_template(TEMPLATE), DEFAULT_LABELS, spec["mix_max_length"])
        pairs = arena_like_pairs(n_rows, spec["seed"], cpt, LengthProfile(scale=spec["mix_scale"]))
    else:
        renderer = Renderer(tokenizer, read_template(TEMPLATE), DEFAULT_LABELS, seq_len)
        pairs = long_pairs(n_rows, seq_len, spec["seed"], cpt)
    rows = training_columns(renderer, pairs)
    batches = length_batches([len(ids) for ids in rows["input_ids"]], batch_size, spec["seed"])
    order = [i for batch in batches for i in batch]
    rows = {key: [column[i] for i in order] for key, column in rows.items()}
    position = iter(range(len(order)))
    return rows, [[next(position) for _ in batch] for batch in batches]


def length_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Rows longest first cut into batches (little padding), the batches in a seeded random order (no trend in
    length over the steps): what the configs' group_by_length sampling aims at, made deterministic."""
    by_length = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def train_steps(model, tokenizer, rows: dict, batch_size: int, steps: int, max_length: int, spec: dict,
                float32_adapters: bool) -> dict:
    """`steps` optimizer steps of trl's SFTTrainer over `rows` in order; returns step end times, the trainer's
    log and the peak memory."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from arena.config import TrainConfig
    from arena.loading import adapters_to_float32

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.ends.append(time.perf_counter())

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as output_dir:
        args = TrainConfig(
            output_dir=output_dir, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
            max_steps=steps, learning_rate=spec["learning_rate"], lr_scheduler_type="constant", optim=spec["optim"],
            logging_steps=1, save_strategy="no", report_to="none", train_sampling_strategy="sequential",
            max_length=max_length, seed=spec["seed"], dataloader_num_workers=0,
            **({} if torch.cuda.is_available() else {"bf16": False}),
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer,
                             callbacks=[timer])
        if float32_adapters:
            adapters_to_float32(model)
        reset_peak_memory()
        trainer.train()
        out = {"ends": timer.ends, "log": trainer.state.log_history, **peak_memory(),
               "padding_free": bool(getattr(trainer, "padding_free", False)),
               "gradient_checkpointing": bool(args.gradient_checkpointing)}
    del trainer
    free_memory()
    return out


def measure(model, tokenizer, rows: dict, batches: list[list[int]], spec: dict, float32_adapters: bool,
            setup: dict) -> dict:
    warmup, steps = spec["warmup_steps"], spec["steps"]
    lengths = [len(ids) for ids in rows["input_ids"]]
    step_tokens = [sum(lengths[i] for i in b) for b in batches][: warmup + steps]
    run = train_steps(model, tokenizer, rows, spec["batch_size"], warmup + steps, max(lengths), spec, float32_adapters)
    ends = run["ends"]
    assert len(ends) == warmup + steps, f"expected {warmup + steps} steps, the trainer made {len(ends)}"
    counted = [e["num_tokens"] for e in run["log"] if "num_tokens" in e]  # trl's count of the tokens it trained on
    tokens, seconds = sum(step_tokens[warmup:]), ends[-1] - ends[warmup - 1]
    tokens_per_s = tokens / seconds
    peak_flops = setup["matmul_tflops"] * 1e12
    losses = [e["loss"] for e in run["log"] if "loss" in e]
    digest = hashlib.sha256(json.dumps([rows["input_ids"], rows["labels"]]).encode()).hexdigest()
    return {
        "tokens_per_s": tokens_per_s, "peak_gib": run["peak_gib"], "mfu": 6 * setup["params_total"] * tokens_per_s
        / peak_flops, "mfu_body": 6 * setup["params_body"] * tokens_per_s / peak_flops,
        "tokens_measured": tokens, "seconds_measured": seconds, "batch_size": spec["batch_size"],
        "warmup_steps": warmup, "steps": steps,
        "step_seconds": [round(b - a, 4) for a, b in zip(ends, ends[1:])], "step_tokens": step_tokens,
        "row_tokens": length_stats(lengths), "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None, "dataset_sha256": digest,
        "trainer_num_tokens": counted[-1] if counted else None,  # should equal sum(step_tokens)
        **{k: run[k] for k in ("peak_reserved_gib", "peak_kind", "padding_free", "gradient_checkpointing") if k in run},
        **setup,
    }


def done(results: str, device: str, seq_len, path: str) -> bool:
    return any(r["device"] == device and r["seq_len"] == seq_len and r.get(f"{path}_tokens_per_s") is not None
               for r in read_json(results, []))


def max_len_done(results: str, device: str, path: str) -> bool:
    return any(r["device"] == device and r.get(path, {}).get("stopped") in ("resolution", "cap")
               for r in read_json(results, []))


def merge_record(results: str, device: str, seq_len, path: str, details: dict) -> None:
    """Puts one path's figures at one length into the records of --results, and the side-by-side ratios when both
    paths are there."""

    def change(records: list) -> None:
        record = next((r for r in records if r["device"] == device and r["seq_len"] == seq_len), None)
        if record is None:
            record = {"device": device, "seq_len": seq_len}
            record.update({f"{p}_{k}": None for p in PATHS for k in ("tokens_per_s", "peak_gib", "mfu")})
            records.append(record)
        record[path] = details
        for key in ("tokens_per_s", "peak_gib", "mfu"):
            record[f"{path}_{key}"] = details.get(key)
        for key in ("speedup", "memory_ratio", "same_batches", "first_loss_rel_diff"):
            record.pop(key, None)
        if all(record.get(f"{p}_tokens_per_s") for p in PATHS):
            unsloth, baseline = record["unsloth"], record["baseline"]
            record["speedup"] = unsloth["tokens_per_s"] / baseline["tokens_per_s"]
            record["memory_ratio"] = unsloth["peak_gib"] / baseline["peak_gib"]
            record["same_batches"] = unsloth["dataset_sha256"] == baseline["dataset_sha256"]
            if unsloth["first_loss"] and baseline["first_loss"]:
                record["first_loss_rel_diff"] = abs(unsloth["first_loss"] / baseline["first_loss"] - 1)
        records.sort(key=lambda r: (r["device"], r["seq_len"] == "mix", str(r["seq_len"]).zfill(8)))

    update_json(results, change, [])


# ---- the longest row at batch 1


def longest_fitting(fits, start: int, cap: int, resolution: int, time_left, on_trial=None) -> dict:
    """The longest length n <= cap with fits(n) True (False: out of memory), searched by doubling from `start`
    and then bisecting between the longest that fit and the shortest that did not, down to `resolution`.
    A trial is skipped when time_left() is shorter than a guess of its duration (the last fitting trial's time
    scaled by the square of the length ratio). `stopped` says why the search ended: "resolution", "cap" (every
    length up to cap fits: the limit is higher), "time", or "start" (not even `start` fits)."""
    result = {"max_len": None, "first_failed": None, "stopped": None, "trials": []}
    last = None  # (length, seconds) of the last trial that fit

    def trial(n: int) -> bool | None:
        if last is not None and time_left() <= last[1] * (n / last[0]) ** 2:
            return None
        began = time.perf_counter()
        ok = bool(fits(n))
        result["trials"].append({"length": n, "fits": ok, "seconds": round(time.perf_counter() - began, 2)})
        if on_trial is not None:
            on_trial(result)
        return ok

    n = start
    while True:
        ok = trial(n)
        if ok is None:
            result["stopped"] = "time"
            return result
        if not ok:
            result["first_failed"] = n
            break
        result["max_len"], last = n, (n, result["trials"][-1]["seconds"])
        if n >= cap:
            result["stopped"] = "cap"
            return result
        n = min(2 * n, cap)
    if result["max_len"] is None:
        result["stopped"] = "start"
        return result
    while result["first_failed"] - result["max_len"] > resolution:
        mid = (result["max_len"] + result["first_failed"]) // 2 // resolution * resolution
        mid = max(mid, result["max_len"] + resolution)
        ok = trial(mid)
        if ok is None:
            result["stopped"] = "time"
            return result
        if ok:
            result["max_len"], last = mid, (mid, result["trials"][-1]["seconds"])
        else:
            result["first_failed"] = mid
    result["stopped"] = "resolution"
    return result


def find_max_len(path, model, tokenizer, rows_tokenizer, spec, float32_adapters, setup, cpt, deadline) -> None:
    memory = {}

    def fits(n: int) -> bool:
        rows, _ = training_rows(rows_tokenizer, spec, n, cpt, n_rows=1, batch_size=1)
        try:
            memory[n] = train_steps(model, tokenizer, rows, 1, 1, n, spec, float32_adapters)["peak_gib"]
            return True
        except Exception as error:  # noqa: BLE001  (only out-of-memory errors are an answer; others go up)
            if not is_oom(error):
                raise
        model.zero_grad(set_to_none=True)
        free_memory()
        return False

    def save(result: dict) -> None:
        for t in result["trials"]:
            t.setdefault("peak_gib", memory.get(t["length"]))

        def change(records: list) -> None:
            record = next((r for r in records if r["device"] == setup["device"]), None)
            if record is None:
                record = {"device": setup["device"], "batch_size": 1, **{f"{p}_max_len": None for p in PATHS}}
                records.append(record)
            record[path] = {**result, "cap": spec["max_len_cap"], "resolution": spec["max_len_resolution"], **setup}
            record[f"{path}_max_len"] = result["max_len"]

        update_json(spec["max_len_results"], change, [])

    result = longest_fitting(fits, spec["max_len_start"], spec["max_len_cap"], spec["max_len_resolution"],
                             lambda: deadline.left() - 20, save)
    save(result)
    print(f"{path}: longest row at batch 1: {result['max_len']} tokens ({result['stopped']})", flush=True)


if __name__ == "__main__":
    main()
