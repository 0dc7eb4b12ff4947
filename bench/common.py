"""What the benchmark scripts share: synthetic battles with an arena-like length mix, the device and its measured
matmul rate, parameter counts for FLOP formulas, peak memory, a deadline, and read-merge-write of result files.

Nothing here imports unsloth: the training baseline runs in a process that must never import it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from arena.data import Pair  # noqa: E402
from arena.io import write_json  # noqa: E402
from data.make_demo_data import SUBJECTS, answer  # noqa: E402

TEMPLATE = os.path.join(ROOT, "prompts", "two_conversations.txt")
GIB = 2**30
REAL_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "llmeval2.csv")  # human-judged battles, beside us
REAL_MODEL = os.path.join(ROOT, "runs", "smollm2-135m-instruct")  # `make real-model`


def check_real_inputs(name: str, data: str, model: str) -> None:
    """Stops with one line when the real battles or the real model are missing."""
    if not os.path.exists(data):
        sys.exit(f"{name}: {data} not found (the LLMEval^2 battles live in ../shared/data, beside this checkout); "
                 "give --data with an arena-layout file")
    if not os.path.exists(os.path.join(model, "config.json")):
        sys.exit(f"{name}: no model in {model}; build it with `make real-model`")


# ---- synthetic battles


@dataclass(frozen=True)
class LengthProfile:
    """An arena-like mix, in tokens of the model's tokenizer: mostly one turn, short prompts, answers of a few
    hundred tokens with a long tail (log-normal). A stated assumption, not fitted to the Kaggle data; the scripts
    record the rendered lengths' percentiles next to every figure."""

    turn_weights: tuple[float, ...] = (0.85, 0.09, 0.04, 0.02)  # 1, 2, 3, 4 turns
    prompt_median: float = 45
    prompt_sigma: float = 1.2
    answer_median: float = 260
    answer_sigma: float = 0.85
    scale: float = 1.0  # multiplies every length (the CPU smoke modes use short ones)

    def draw(self, rng: random.Random, median: float, sigma: float) -> int:
        return max(2, min(8000, round(self.scale * rng.lognormvariate(math.log(median), sigma))))


def chars_per_token(tokenizer) -> float:
    """How many characters of the synthetic text one token of this tokenizer holds (to hit token targets)."""
    text = _text(random.Random(0), 20000)
    return len(text) / len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _text(rng: random.Random, n_chars: int) -> str:
    """Demo-style sentences (data/make_demo_data.py) about one subject, cut to n_chars."""
    subject, parts, size = rng.choice(SUBJECTS), [], 0
    while size < n_chars:
        parts.append(answer(rng, subject, rng.random() < 0.1))
        size += len(parts[-1]) + 1
    return " ".join(parts)[:n_chars]


def arena_like_pairs(n: int, seed: int, cpt: float, profile: LengthProfile = LengthProfile()) -> list[Pair]:
    """n labelled battles with lengths drawn from `profile` (cpt: the tokenizer's chars_per_token)."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        turns = rng.choices(range(1, len(profile.turn_weights) + 1), weights=profile.turn_weights)[0]
        prompt, a, b = [], [], []
        for _ in range(turns):
            prompt.append(_text(rng, round(cpt * profile.draw(rng, profile.prompt_median, profile.prompt_sigma))))
            a.append(_text(rng, round(cpt * profile.draw(rng, profile.answer_median, profile.answer_sigma))))
            b.append(_text(rng, round(cpt * profile.draw(rng, profile.answer_median, profile.answer_sigma))))
        pairs.append(Pair(f"bench-{seed}-{i}", tuple(prompt), tuple(a), tuple(b), rng.randrange(3)))
    return pairs


def long_pairs(n: int, tokens: int, seed: int, cpt: float) -> list[Pair]:
    """n one-turn battles whose three texts each exceed `tokens` tokens, so that rendering under a budget of
    `tokens` fills it (the renderer cuts the texts, never the label)."""
    rng = random.Random(seed)
    size = round(1.2 * cpt * tokens) + 100
    return [
        Pair(f"long-{seed}-{i}", (_text(rng, size),), (_text(rng, size),), (_text(rng, size),), rng.randrange(3))
        for i in range(n)
    ]


def length_stats(lengths: list[int]) -> dict:
    ordered = sorted(lengths)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"n": len(ordered), "mean": round(statistics.fmean(ordered), 1), "p50": pct(0.5), "p90": pct(0.9),
            "p99": pct(0.99), "max": ordered[-1], "min": ordered[0]}


# ---- the device


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {model} ({torch.get_num_threads()} threads)"


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict:
    """GPU: the peak of memory allocated by tensors (and reserved by the caching allocator) since the last
    reset_peak_memory(), in GiB. CPU: the process's peak resident set size over its whole life (not resettable)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return {"peak_gib": torch.cuda.max_memory_allocated() / GIB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
                "peak_kind": "torch.cuda.max_memory_allocated since the start of this measurement"}
    return {"peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
            "peak_kind": "CPU: process peak RSS over its life (ru_maxrss)"}


def matmul_tflops(repeats: int = 10) -> dict:
    """The measured dense matmul rate used as the roofline: on a GPU an 8192^3 bf16 product of random matrices
    (median of `repeats` timed with CUDA events after 3 warm-ups), on a CPU a 512^3 float32 one."""
    import torch

    cuda = torch.cuda.is_available()
    n, dtype = (8192, torch.bfloat16) if cuda else (512, torch.float32)
    device = "cuda" if cuda else "cpu"
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(3 + repeats):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            a @ b
            end.record()
            end.synchronize()
            elapsed = begin.elapsed_time(end) / 1000
        else:
            began = time.perf_counter()
            a @ b
            elapsed = time.perf_counter() - began
        if i >= 3:
            times.append(elapsed)
    seconds = statistics.median(times)
    del a, b
    return {"matmul_tflops": 2 * n**3 / seconds / 1e12, "matmul_shape": [n, n, n], "matmul_dtype": str(dtype)}


def param_counts(model_dir: str) -> dict:
    """Parameters of the model as its config defines it (counted on the meta device, so a 4-bit load's packed
    weights do not halve the count): all of them, and without the input embeddings and the LM head."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    if config.tie_word_embeddings:
        head = 0
    with open(os.path.join(model_dir, "config.json"), "rb") as f:
        config_sha256 = hashlib.sha256(f.read()).hexdigest()[:16]  # which model the figures are of
    return {"params_total": total, "params_body": total - embeddings - head, "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers, "vocab_size": config.vocab_size,
            "model_config_sha256": config_sha256}


def weight_format(model) -> str:
    """What the linear layers' weights really are after loading: nf4, int8, or a float dtype."""
    import torch

    for module in model.modules():
        kind = type(module).__name__
        if kind == "Linear4bit":
            return "nf4"
        if kind == "Linear8bitLt":
            return "int8"
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    return str(linear.weight.dtype).replace("torch.", "")


def is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error) for s in ("out of memory", "ALLOC_FAILED"))


def free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- time and results


class Deadline:
    """An absolute time (seconds since the epoch) that a device call must end before; None: no limit."""

    def __init__(self, at: float | None):
        self.at = at

    def left(self) -> float:
        return math.inf if self.at is None else self.at - time.time()

    def allows(self, seconds: float) -> bool:
        return seconds < self.left()


def read_json(path: str, default):
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def update_json(path: str, change, default) -> object:
    """Reads `path` (or `default`), lets `change` modify it in place, writes it back atomically."""
    data = read_json(path, default)
    change(data)
    write_json(path, data)
    return data


def build_tiny_model(folder: str) -> str:
    """The demo's tiny random Llama, built by the project's own scripts into `folder`; returns its path."""
    data, model = os.path.join(folder, "data"), os.path.join(folder, "model")
    for args in (["data/make_demo_data.py", "--out", data, "--rows", "300", "--test_rows", "10"],
                 ["tools/make_random_model.py", "--out", model, "--corpus", os.path.join(data, "train.csv")]):
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return model
