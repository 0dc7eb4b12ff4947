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
from dataclasses import dataclass

import numpy as np
import torch

from arena.data import CLASS_NAMES, LABEL_COLUMNS, DataError, Pair
from arena.io import atomic_open
from arena.prompts import Rendered

VIEWS = ("", "_swapped")  # suffixes of the logit columns: the pair as given, and with A and B swapped (--tta)


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


def write_predictions(
    path: str, rows: list[Pair] | list[str], probs: np.ndarray, extra: dict[str, list] | None = None
) -> None:
    """`id, winner_model_a, winner_model_b, winner_tie` (the Kaggle submission), then any `extra` columns; `rows`
    are the pairs or their ids. `read_predictions` reads it back."""
    extra = extra or {}
    with atomic_open(path) as f:
        writer = csv.writer(f)
        writer.writerow(["id", *LABEL_COLUMNS, *extra])
        for i, (row, p) in enumerate(zip(rows, probs)):
            writer.writerow([getattr(row, "id", row), *map(float, p), *(column[i] for column in extra.values())])


def heldout_columns(pairs: list[Pair], rendered: list[Rendered], logits: np.ndarray) -> dict[str, list]:
    """oof.csv's columns after the probabilities: the label; what the row is like (its flags, which answer is
    empty, turns, what fitting the budget cut, tokens needed), for the breakdowns and the priors; and the label
    logits [n, views, labels] as `logit_A`, `logit_B`, `logit_tie` (and `logit_A_swapped`, ... with --tta)."""
    columns = {
        "label": [p.label for p in pairs],
        "one_empty": [p.one_empty for p in pairs],
        "identical": [p.identical for p in pairs],
        "empty_answer": [CLASS_NAMES[p.empty_side] if p.one_empty else "" for p in pairs],
        "turns": [r.turns for r in rendered],
        "dropped_turns": [r.dropped_turns for r in rendered],
        "shortened_texts": [r.shortened_texts for r in rendered],
        "tokens": [r.full_length for r in rendered],
    }
    for view in range(logits.shape[1]):
        for label in range(logits.shape[2]):
            columns[f"logit_{CLASS_NAMES[label]}{VIEWS[view]}"] = logits[:, view, label].tolist()
    return columns


@dataclass
class Predictions:
    """A predictions file (a submission or oof.csv) as read back: ids, probabilities, and the other columns as text."""

    path: str
    ids: list[str]
    probs: np.ndarray
    columns: dict[str, list[str]]

    def numbers(self, name: str) -> np.ndarray:
        return self._parsed(name, float)

    def flags(self, name: str) -> np.ndarray:
        return self._parsed(name, lambda text: {"True": True, "False": False}[text]).astype(bool)

    def labels(self) -> np.ndarray | None:
        """The `label` column as integers, or None when the file has none (a submission)."""
        return self.numbers("label").astype(int) if "label" in self.columns else None

    def empty_side(self) -> np.ndarray:
        """`Pair.empty_side` of every row, from the `empty_answer` column."""
        return self._parsed("empty_answer", lambda text: CLASS_NAMES.index(text) if text else -1).astype(int)

    def logits(self) -> np.ndarray | None:
        """The label logits [n, views, labels] written by `heldout_columns`, or None when the file has none."""
        views = [
            np.stack([self.numbers(f"logit_{name}{suffix}") for name in CLASS_NAMES[: self.probs.shape[1]]], axis=1)
            for suffix in VIEWS
            if f"logit_{CLASS_NAMES[0]}{suffix}" in self.columns
        ]
        return np.stack(views, axis=1) if views else None

    def _parsed(self, name: str, parse) -> np.ndarray:
        if name not in self.columns:
            raise DataError(f"{self.path}: no column {name}")
        out = []
        for row, text in enumerate(self.columns[name], 1):
            try:
                out.append(parse(text))
            except (ValueError, KeyError):
                raise DataError(f"{self.path}: row {row} (id {self.ids[row - 1]}), column {name}: "
                                f"cannot read {text!r}") from None
        return np.array(out)


def read_predictions(path: str) -> Predictions:
    """Reads back what `write_predictions` writes: the id and probability columns must be there, ids unique."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the predictions ({e})") from None
    head = ["id", *LABEL_COLUMNS]
    if not rows or rows[0][: len(head)] != head:
        raise DataError(f"{path}: not a predictions file: the header must start with {','.join(head)}")
    header, body = rows[0], rows[1:]
    seen = {}
    for row, values in enumerate(body, 1):
        if len(values) != len(header):
            raise DataError(f"{path}: row {row}: {len(values)} cells, the header has {len(header)}")
        if values[0] in seen:
            raise DataError(f"{path}: row {row} (id {values[0]}): duplicate id (first seen on row {seen[values[0]]})")
        seen[values[0]] = row
    columns = {name: [values[i] for values in body] for i, name in enumerate(header)}
    read = Predictions(path, columns.pop("id"), np.zeros((len(body), len(LABEL_COLUMNS))), columns)
    for j, name in enumerate(LABEL_COLUMNS):
        read.probs[:, j] = read.numbers(name)
        del columns[name]
    return read


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
