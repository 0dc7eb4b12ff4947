"""Shared fixtures: the demo data, a tiny random Llama (and a Gemma-2) built like a hub checkpoint, and the real
tokenizers from ../shared/tokenizers (tests that need them are skipped when that folder is absent)."""

import unsloth  # noqa: F401  (first, as in the scripts: it patches transformers, peft and trl on import)

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_TOKENIZERS = ROOT.parent / "shared" / "tokenizers"
sys.path.insert(0, str(ROOT))


def run_script(*args, timeout=600, env=None):
    """Runs a project script the way a user does, from the project root; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


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
