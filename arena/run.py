"""The pieces of a run both scripts need: the model loader, the predictions file (written, and read back as a
teacher file), the demo's Bayes limit, and what ran."""

from __future__ import annotations

import contextlib
import csv
import glob
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from arena.data import (
    CLASS_NAMES, LABEL_COLUMNS, WINNER_COLUMN, WINNERS, BadRows, DataError, Pair, RowError, read_table,
)
from arena.io import atomic_open, write_json
from arena.prompts import Rendered

ADAPTER_CONFIG = "adapter_config.json"
BASE_MODEL_FILE = "base_model.json"  # in a run folder: base_facts() of the model the adapter was trained on
BASE_FACTS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_HELP = ("Compute dtype: auto (float32 on a CPU, whatever the CPU supports; on a GPU unsloth's choice: bfloat16 "
              "where supported, else float16), float32, bfloat16 or float16.")
VIEWS = ("", "_swapped")  # suffixes of the logit columns: the pair as given, and with A and B swapped (--tta)


def compute_dtype(name: str) -> torch.dtype | None:
    """The torch dtype for a --dtype setting; None lets unsloth choose (auto on a GPU). On a CPU, auto is float32 so
    that results do not depend on whether the CPU has native bf16 (unsloth would compute in bf16 there)."""
    if name not in DTYPES:
        raise DataError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name == "auto":
        return None if torch.cuda.is_available() else torch.float32
    if name == "float16" and not torch.cuda.is_available():
        raise DataError("--dtype float16 needs a GPU (a CPU only emulates float16); use float32 or bfloat16")
    return getattr(torch, name)


def load_model(
    name: str, max_length: int, load_in_4bit: bool = True, load_in_8bit: bool = False, dtype: str = "auto",
    base: str | None = None,
):
    """unsloth's loader for a base model or a saved LoRA adapter folder (its base is read from adapter_config.json,
    or is `base` when given, and the adapter put on top). Returns (model, tokenizer). Weights: 4-bit NF4, or 8-bit
    (bitsandbytes LLM.int8; wins over `load_in_4bit`), or neither: 16-bit. `dtype` is a --dtype setting.

    A local folder (and a local adapter's local base) is loaded with `local_files_only`: otherwise unsloth's GPU
    loader asks the model hub whether the folder is an adapter repo, and an offline machine waits on its retries."""
    from unsloth import FastLanguageModel

    torch_dtype = compute_dtype(dtype)
    with adapter_on_base(local_path(name), base) as folder:
        is_adapter = os.path.exists(os.path.join(folder, ADAPTER_CONFIG))
        if is_adapter and os.path.isabs(adapter_base(folder)) and not os.path.isdir(adapter_base(folder)):
            raise DataError(f"{name}: the adapter's base model {adapter_base(folder)} (from {ADAPTER_CONFIG}) is not "
                            "on this machine; give its local copy with --model")
        return FastLanguageModel.from_pretrained(
            model_name=folder, max_seq_length=max_length, dtype=torch_dtype,
            load_in_4bit=load_in_4bit and not load_in_8bit, load_in_8bit=load_in_8bit,
            **local_only(adapter_base(folder) if is_adapter else folder),
        )


def local_path(name: str) -> str:
    """A local folder as an absolute path (the adapter then records a base that resolves from any working folder,
    and no hub call can mistake it for a repo id); a hub name as it is."""
    return os.path.abspath(name) if os.path.isdir(name) else name


def local_only(name: str) -> dict:
    """from_pretrained's keyword for a model that is a local folder: never ask the hub about it."""
    return {"local_files_only": True} if os.path.isdir(name) else {}


def adapter_base(folder: str) -> str:
    """The base model named in an adapter folder's adapter_config.json."""
    with open(os.path.join(folder, ADAPTER_CONFIG), encoding="utf-8") as f:
        return json.load(f)["base_model_name_or_path"]


def base_facts(config) -> dict:
    """What an adapter needs of its base: architecture and sizes (from a transformers config)."""
    facts = {key: getattr(config, key, None) for key in BASE_FACTS}
    facts["architectures"] = list(getattr(config, "architectures", None) or [])
    return facts


@contextlib.contextmanager
def adapter_on_base(name: str, base: str | None):
    """`name` itself, or with `base`: a temporary copy of the adapter folder whose adapter_config.json names `base`
    (the files are links), after checking that `base` is the kind of model the adapter was trained on."""
    if base is None:
        yield name
        return
    if not os.path.exists(os.path.join(name, ADAPTER_CONFIG)):
        raise DataError(f"{name}: not an adapter folder (no {ADAPTER_CONFIG}), so it cannot be put on --model {base}")
    check_base(name, base)
    with tempfile.TemporaryDirectory(prefix="adapter-on-base-") as folder:
        for entry in os.listdir(name):
            if entry != ADAPTER_CONFIG:
                os.symlink(os.path.abspath(os.path.join(name, entry)), os.path.join(folder, entry))
        with open(os.path.join(name, ADAPTER_CONFIG), encoding="utf-8") as f:
            config = json.load(f)
        config["base_model_name_or_path"] = local_path(base)
        write_json(os.path.join(folder, ADAPTER_CONFIG), config)
        yield folder


def check_base(run: str, base: str) -> None:
    """Refuses a base model whose architecture or sizes differ from those the adapter in `run` was trained on
    (recorded in the run's base_model.json), reading only the base's config, not its weights."""
    from transformers import AutoConfig

    recorded_path = os.path.join(run, BASE_MODEL_FILE)
    if not os.path.exists(recorded_path):
        raise DataError(f"{run}: no {BASE_MODEL_FILE} (a run from an older version), so --model cannot be checked "
                        "against the adapter; leave --model out to use the base named in its adapter_config.json")
    with open(recorded_path, encoding="utf-8") as f:
        recorded = json.load(f)
    try:
        config = AutoConfig.from_pretrained(base, **local_only(base))
    except (OSError, ValueError) as e:
        raise DataError(f"{base}: cannot read the base model's config ({str(e).splitlines()[0]})") from None
    given = base_facts(config)
    wrong = [f"{key} {given[key]!r} (the adapter's base: {recorded.get(key)!r})"
             for key in (*BASE_FACTS, "architectures") if given[key] != recorded.get(key)]
    if wrong:
        raise DataError(f"{base}: does not match the adapter in {run}: " + "; ".join(wrong))


def adapters_to_float32(model) -> None:
    """Keeps the LoRA weights in float32, peft's own default. trl casts a quantized model's adapters to bf16; left so,
    the model trained here and the same adapter reloaded (peft upcasts bf16 adapters to float32 on loading) compute
    different functions, and where bf16 is not native every LoRA matmul is emulated (training took 3.8x as long:
    bench/adapter_dtype.py). Call after building the trainer."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def precision(model) -> dict[str, str]:
    """The dtypes a model computes in and its trainable (LoRA) weights are stored in, for metrics.json."""
    trainable = {dtype_name(p.dtype) for p in model.parameters() if p.requires_grad}
    return {"dtype": dtype_name(model.dtype), "adapter_dtype": ",".join(sorted(trainable)) or "none"}


def process_state():
    """This process's place among those `accelerate launch` / torchrun started (one process without a launcher).
    Without a GPU, accelerate joins the process group only when asked for CPU (gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def write_predictions(
    path: str, rows: list[Pair] | list[str], probs: np.ndarray, extra: dict[str, list] | None = None
) -> None:
    """`id, winner_model_a, winner_model_b, winner_tie` (the Kaggle submission; two-way: without `winner_tie`), then
    any `extra` columns; `rows` are the pairs or their ids. `read_predictions` reads it back."""
    extra = extra or {}
    with atomic_open(path) as f:
        writer = csv.writer(f)
        writer.writerow(["id", *LABEL_COLUMNS[: probs.shape[1]], *extra])
        for i, (row, p) in enumerate(zip(rows, probs)):
            writer.writerow([getattr(row, "id", row), *map(float, p), *(column[i] for column in extra.values())])


def winners_file(path: str) -> str:
    """Where infer.py writes the two-way submission beside the probabilities: sub.csv -> sub_winner.csv."""
    return os.path.splitext(path)[0] + "_winner.csv"


def write_winners(path: str, rows: list[Pair] | list[str], probs: np.ndarray) -> None:
    """The two-way (WSDM Cup) submission: `id, winner`, the more probable of model_a and model_b."""
    with atomic_open(path) as f:
        writer = csv.writer(f)
        writer.writerow(["id", WINNER_COLUMN])
        writer.writerows([getattr(row, "id", row), WINNERS[int(p[1] > p[0])]] for row, p in zip(rows, probs))


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

    def by_id(self) -> dict[str, np.ndarray]:
        return dict(zip(self.ids, self.probs))

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


def read_predictions(path: str, on_bad_row: str = "error", bad_rows: BadRows | None = None) -> Predictions:
    """Reads back what `write_predictions` writes (an oof.csv, a submission; also the demo's truth.csv, and the same
    columns in Parquet or JSON Lines): ids, probabilities (each row normalised to sum to 1) and the other columns as
    text; without a `winner_tie` column the file is two-way (two probabilities a row). A row with an empty or
    repeated id, or probabilities that are not non-negative numbers, stops the run, or with `on_bad_row="skip"` is
    recorded in `bad_rows` and left out."""
    columns, rows = read_table(path)
    missing = [c for c in ("id", *LABEL_COLUMNS[:2]) if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a predictions file has id, "
                        f"{', '.join(LABEL_COLUMNS)} (two-way: without {LABEL_COLUMNS[2]})")
    probability_columns = LABEL_COLUMNS if LABEL_COLUMNS[2] in columns else LABEL_COLUMNS[:2]
    others = [c for c in columns if c not in ("id", *probability_columns)]
    ids, probs, text, seen = [], [], {c: [] for c in others}, {}
    for i, row in rows:
        row_id = "" if row.get("id") is None else str(row.get("id"))
        try:
            if getattr(row, "problem", None):  # a row the file format itself could not parse
                raise RowError(path, i, "", "", row.problem)
            if not row_id:
                raise RowError(path, i, "", "id", "empty id")
            if row_id in seen:
                raise RowError(path, i, row_id, "id", f"duplicate id (first seen on row {seen[row_id]})")
            probs.append(_probabilities(path, i, row_id, row, probability_columns))
        except RowError as e:
            if on_bad_row != "skip" or bad_rows is None:
                raise
            bad_rows.add(e)
            continue
        seen[row_id] = i
        ids.append(row_id)
        for c in others:
            text[c].append("" if row.get(c) is None else str(row.get(c)))
    return Predictions(path, ids, np.array(probs).reshape(len(ids), len(probability_columns)), text)


def _probabilities(path: str, i: int, row_id: str, row: dict, columns: tuple[str, ...]) -> np.ndarray:
    values = []
    for column in columns:
        try:
            values.append(float(row[column]))
        except (KeyError, TypeError, ValueError):
            raise RowError(path, i, row_id, column, f"probability {row.get(column)!r} is not a number") from None
        if not np.isfinite(values[-1]) or values[-1] < 0:
            raise RowError(path, i, row_id, column, f"probability {values[-1]!r} is not a non-negative number")
    if sum(values) <= 0:
        raise RowError(path, i, row_id, "/".join(columns), "probabilities sum to 0")
    return np.array(values) / sum(values)


def teacher_probs(
    paths: list[str], pairs: list[Pair], on_bad_row: str = "error", bad_rows: BadRows | None = None,
    n_labels: int = 3,
) -> tuple[list[Pair], list[list[float]]]:
    """Soft labels for training pairs: the average of the teacher files' probabilities for each pair's id; each file
    must have `n_labels` probability columns (three, or two for a two-way run). A pair that a file has no row for
    stops the run, or with `on_bad_row="skip"` is left out and recorded in `bad_rows`. Returns the pairs kept and
    their probabilities."""
    bad_rows = BadRows() if bad_rows is None else bad_rows
    tables = []
    for path in paths:
        read = read_predictions(path, on_bad_row, bad_rows)
        if read.probs.shape[1] != n_labels:
            raise DataError(f"{path}: a teacher file of {read.probs.shape[1]} probability columns for a run of "
                            f"{n_labels} labels")
        tables.append((path, read.by_id()))
    kept, probs = [], []
    for pair in pairs:
        missing = next((path for path, table in tables if pair.id not in table), None)
        if missing is None:
            kept.append(pair)
            probs.append(np.mean([table[pair.id] for _, table in tables], axis=0).tolist())
            continue
        problem = f"no teacher row for training row id {pair.id} (of {pair.source})"
        if on_bad_row != "skip":
            raise DataError(f"{missing}: {problem}")
        bad_rows.rows.append((missing, "", pair.id, "id", problem))
    return kept, probs


TRUTH_FILE = "truth.csv"  # the demo's true probabilities, beside its data (data/make_demo_data.py)


def add_bayes_limit(result: dict, pairs: list[Pair]) -> str:
    """On data with a truth.csv beside it (the demo): adds `bayes_limit`, the best log loss possible on `pairs` (the
    mean entropy of their true distributions), and `gap` (log_loss - bayes_limit) to `result`, and returns them in
    words for the score line. Elsewhere returns ""."""
    truths = {}
    for source in sorted({p.source for p in pairs}):
        path = os.path.join(os.path.dirname(source), TRUTH_FILE)
        if not os.path.exists(path):
            return ""
        truths.update(read_predictions(path).by_id())
    if not pairs or any(p.id not in truths for p in pairs):
        return ""
    p = np.stack([truths[pair.id] for pair in pairs])
    result["bayes_limit"] = float(-np.mean(np.sum(p * np.log(np.where(p > 0, p, 1)), axis=1)))
    result["gap"] = result["log_loss"] - result["bayes_limit"]
    return f" (Bayes limit {result['bayes_limit']:.4f}, gap {result['gap']:.4f})"


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
