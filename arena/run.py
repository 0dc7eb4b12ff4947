"""The pieces of a run both scripts need: the model loader, the predictions file, and what ran."""

from __future__ import annotations

import csv
import glob
import importlib.metadata
import json
import os
import platform
import re
import subprocess

import numpy as np
import torch

from arena.data import LABEL_COLUMNS, Pair
from arena.io import atomic_open


def load_model(name: str, max_length: int, load_in_4bit: bool = True, load_in_8bit: bool = False):
    """unsloth's loader for a base model or a saved LoRA adapter folder (its base is read from
    adapter_config.json and the adapter put on top). Returns (model, tokenizer). Weights: 4-bit NF4, or 8-bit
    (bitsandbytes LLM.int8; wins over `load_in_4bit`), or neither: 16-bit."""
    from unsloth import FastLanguageModel

    return FastLanguageModel.from_pretrained(
        model_name=name, max_seq_length=max_length, load_in_4bit=load_in_4bit and not load_in_8bit,
        load_in_8bit=load_in_8bit,
    )


def adapters_to_float32(model) -> None:
    """trl stores QLoRA adapter weights in bf16; without native bf16 (most CPUs) every LoRA matmul is then
    emulated (training took 3.8x as long: bench/adapter_dtype.py) and small updates round away. Call after
    building the trainer, where bf16 is not native, to keep them in float32."""
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()


def process_state():
    """This process's place among those `accelerate launch` / torchrun started (one process without a launcher).
    Without a GPU, accelerate joins the process group only when asked for CPU (gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def write_predictions(path: str, pairs: list[Pair], probs: np.ndarray, extra: dict[str, list] | None = None) -> None:
    """`id, winner_model_a, winner_model_b, winner_tie` (the Kaggle submission), then any `extra` columns."""
    extra = extra or {}
    with atomic_open(path) as f:
        writer = csv.writer(f)
        writer.writerow(["id", *LABEL_COLUMNS, *extra])
        for i, (pair, p) in enumerate(zip(pairs, probs)):
            writer.writerow([pair.id, *map(float, p), *(column[i] for column in extra.values())])


def versions() -> dict[str, str]:
    """Package versions, Python, and the git commit of this checkout (with '+dirty' for local changes)."""
    out = {"python": platform.python_version()}
    for name in ("torch", "unsloth", "unsloth_zoo", "trl", "transformers", "peft", "bitsandbytes", "accelerate", "datasets"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True).stdout.strip()
        out["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = "unknown"
    return out


def latest_checkpoint(run: str) -> str | None:
    """The newest complete `checkpoint-N` in a run folder. The trainer writes trainer_state.json last, so a
    checkpoint without a readable one was cut off while being written and is never picked."""
    found = []
    for path in glob.glob(os.path.join(run, "checkpoint-*")):
        step = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(path))
        try:
            with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
                json.load(f)
        except (OSError, ValueError):
            continue
        if step:
            found.append((int(step[1]), path))
    return max(found)[1] if found else None


def model_fingerprint(path: str, *settings) -> str:
    """Identifies a model folder's weights (names, sizes, times) together with the settings that change scores."""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else []
    stats = [(os.path.basename(f), os.path.getsize(f), os.path.getmtime(f)) for f in files]
    return json.dumps([os.path.abspath(path) if os.path.isdir(path) else path, stats, *settings])
