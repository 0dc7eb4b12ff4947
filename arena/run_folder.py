"""The run folder (train_unsloth.py's --output_dir): the one place that knows the name of every file in it, and reads
and writes them. Other modules name a file by the constant here and never spell it.

    adapter_config.json, adapter_model.safetensors   the LoRA adapter (peft), and the tokenizer's files
    label_head.safetensors   the --label_head's weights and bias (arena/label_head.py)
    base_model.json   what the adapter needs of its base: architecture and sizes (checked by infer.py --model)
    config.yaml       every resolved setting (what --config reads back; infer.py reads the run's from it)
    prompt.txt        the prompt template the run was trained with
    versions.json     package versions, Python and the git commit
    folds.csv         id,fold of every labelled row
    oof.csv           the held-out rows' predictions (arena/predictions.py): an output, never read back by the run
    metrics.json      held-out figures; written last, so a fold with it is finished
    calibration.json  the temperature and priors fitted on the held-out rows (arena/calibration.py)
    reliability.png, confusion.png, subgroups.png   the pictures (arena/pictures.py)
    lengths.png       the dry run's token lengths; bad_rows.csv   rows skipped with --on_bad_row skip
    checkpoint-N/     the trainer's checkpoints; fold-K/   each fold's run folder under --fold all
"""

from __future__ import annotations

import csv
import glob
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess

import yaml

from arena.io import atomic_open, write_json

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LABEL_HEAD = "label_head.safetensors"
BASE_MODEL = "base_model.json"
CONFIG = "config.yaml"
PROMPT = "prompt.txt"
VERSIONS = "versions.json"
FOLDS = "folds.csv"
OOF = "oof.csv"
METRICS = "metrics.json"
CALIBRATION = "calibration.json"
PICTURES = ("reliability.png", "confusion.png", "subgroups.png")
LENGTHS = "lengths.png"
BAD_ROWS = "bad_rows.csv"
TRAINER_STATE = "trainer_state.json"  # in a checkpoint-N folder, written last by the trainer
# what a merged export (tools/merge_adapter.py) takes from its run, for infer.py --model to read
MERGED_EXPORT_FILES = (PROMPT, CONFIG, CALIBRATION, LABEL_HEAD)


def path(folder: str, *names: str) -> str:
    return os.path.join(folder, *names)


def read_json(file: str):
    """Every JSON file of a run folder is read here."""
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def read_config(folder: str) -> dict:
    """The run's resolved settings (config.yaml), or {} when the folder has none (a base model)."""
    file = path(folder, CONFIG)
    if not os.path.exists(file):
        return {}
    with open(file, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def prompt_file(folder: str) -> str | None:
    """The run's prompt.txt, or None when the folder has none."""
    file = path(folder, PROMPT)
    return file if os.path.exists(file) else None


def is_adapter(folder: str) -> bool:
    return os.path.exists(path(folder, ADAPTER_CONFIG))


def adapter_config(folder: str) -> dict:
    return read_json(path(folder, ADAPTER_CONFIG))


def adapter_base(folder: str) -> str:
    """The base model named in an adapter folder's adapter_config.json."""
    return adapter_config(folder)["base_model_name_or_path"]


def read_base_facts(folder: str) -> dict | None:
    """base_model.json, or None for a run from before it existed."""
    file = path(folder, BASE_MODEL)
    return read_json(file) if os.path.exists(file) else None


def read_metrics(folder: str) -> dict | None:
    """metrics.json, or None when the folder has no readable one (an unfinished run)."""
    try:
        return read_json(path(folder, METRICS))
    except (OSError, ValueError):
        return None


def write_metrics(folder: str, metrics: dict) -> None:
    write_json(path(folder, METRICS), metrics)


def read_folds(folder: str) -> list[tuple[str, int]] | None:
    """folds.csv as (id, fold) pairs, or None when it is missing or unreadable."""
    try:
        with open(path(folder, FOLDS), encoding="utf-8", newline="") as f:
            return [(row["id"], int(row["fold"])) for row in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        return None


def write_folds(folder: str, folds: list[tuple[str, int]]) -> None:
    with atomic_open(path(folder, FOLDS)) as f:
        f.write("id,fold\n")
        f.writelines(f"{row_id},{fold}\n" for row_id, fold in folds)


def save_run(folder: str, config_text: str, template: str, folds: list[tuple[str, int]], base_facts: dict) -> None:
    """What a trained run records beside its adapter: settings, prompt, versions, folds and its base's facts."""
    from arena.io import write_text

    write_text(path(folder, CONFIG), config_text)
    shutil.copyfile(template, path(folder, PROMPT))
    write_json(path(folder, VERSIONS), versions())
    write_folds(folder, folds)
    write_json(path(folder, BASE_MODEL), base_facts)


def copy_for_export(run: str, out: str) -> None:
    """The run's files that a merged export keeps (infer.py --model reads them there)."""
    for name in MERGED_EXPORT_FILES:
        if os.path.exists(path(run, name)):
            shutil.copy2(path(run, name), out)


def fold_folder(run: str, fold: int) -> str:
    return os.path.join(run, f"fold-{fold}")


def latest_checkpoint(run: str) -> str | None:
    """The newest complete `checkpoint-N` in a run folder. The trainer writes trainer_state.json last, so a
    checkpoint without a readable one was cut off while being written and is never picked."""
    found = []
    for folder in glob.glob(os.path.join(run, "checkpoint-*")):
        step = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(folder))
        try:
            read_json(path(folder, TRAINER_STATE))
        except (OSError, ValueError):
            continue
        if step:
            found.append((int(step[1]), folder))
    return max(found)[1] if found else None


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
