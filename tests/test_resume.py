"""Faults: a training run killed after a checkpoint resumes to the same result; a half-written checkpoint is never
picked; a killed infer.py leaves no partial submission and --resume reuses its finished batches, but not those of an
adapter retrained since."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from arena.data import DataError
from arena.run_folder import latest_checkpoint
from conftest import ROOT, check, run_cli, run_script
from trace_files import read_trace

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`

STEPS = ["--max_steps", "40", "--save_strategy", "steps", "--save_steps", "10", "--logging_steps", "10"]


def train_args(tiny_model, small_demo, run):
    return ["train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model,
            "--train_file", small_demo / "train.csv", "--output_dir", run, *STEPS]


def start(args):
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def kill_when(process, ready, timeout=300):
    """SIGKILL the process as soon as ready() is true; fails if it ends first."""
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, f"ended before it could be killed:\n{process.stderr.read()[-3000:]}"
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_latest_checkpoint_skips_a_half_written_one(tmp_path):
    for step, state in ((10, "{}"), (20, "{}"), (30, '{"global_st'), (40, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"x")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert latest_checkpoint(str(tmp_path / "missing")) is None


def checkpoints(run):
    return sorted(p.name for p in run.glob("checkpoint-*"))


def test_killed_training_resumes_to_the_uninterrupted_result(tiny_model, small_demo, tmp_path):
    straight = tmp_path / "straight"
    check(run_cli(*train_args(tiny_model, small_demo, straight), "--save_total_limit", "1"))
    assert checkpoints(straight) == ["checkpoint-40"]  # the newest --save_total_limit are kept

    run = tmp_path / "killed"
    process = start(train_args(tiny_model, small_demo, run))
    kill_when(process, lambda: latest_checkpoint(str(run)) is not None and latest_checkpoint(str(run)).endswith("-20"))
    assert not (run / "metrics.json").exists()
    assert checkpoints(run) == ["checkpoint-10", "checkpoint-20"]

    # resume from a checkpoint given by path, not the latest one; the trace shows which one was read
    trace = tmp_path / "trace"
    result = check(run_script("tests/trace_files.py", trace, run, *train_args(tiny_model, small_demo, run),
                              "--resume_from_checkpoint", run / "checkpoint-10"))
    state = {os.path.relpath(path, run) for kind, path in read_trace(f"{trace}.0")
             if kind == "r" and os.path.basename(path) in ("optimizer.pt", "scheduler.pt", "trainer_state.json")}
    assert state == {"checkpoint-10/optimizer.pt", "checkpoint-10/scheduler.pt", "checkpoint-10/trainer_state.json"}
    assert checkpoints(run) == ["checkpoint-30", "checkpoint-40"]  # the default save_total_limit: 2
    a = load_file(straight / "adapter_model.safetensors")
    b = load_file(run / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=key)  # CPU float noise only
    m1 = json.loads((straight / "metrics.json").read_text())
    m2 = json.loads((run / "metrics.json").read_text())
    assert m2["log_loss"] == pytest.approx(m1["log_loss"], abs=1e-4)
    assert "Traceback" not in result.stderr


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_model, small_demo, tmp_path):
    result = run_cli(*train_args(tiny_model, small_demo, tmp_path / "empty"), "--resume_from_checkpoint", "latest")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'empty'}: no complete checkpoint to resume from"


def test_resume_from_checkpoint_takes_latest_or_a_path(tmp_path):
    from train_unsloth import resume_path

    for step in (10, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert resume_path("latest", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert resume_path(str(tmp_path / "checkpoint-10"), str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resume_path(None, str(tmp_path)) is None
    with pytest.raises(DataError, match=f"^{tmp_path / 'checkpoint-30'}: no such checkpoint folder$"):
        resume_path(str(tmp_path / "checkpoint-30"), str(tmp_path))


def test_killed_inference_leaves_no_file_and_resumes(tiny_model, small_demo, tmp_path):
    args = ["infer.py", "--model", tiny_model, "--data_file", small_demo / "train.csv", "--max_length", "512",
            "--score_max_tokens", "600"]
    reference = tmp_path / "reference.csv"
    check(run_cli(*args, "--output_file", reference))

    out = tmp_path / "out" / "submission.csv"
    cache = out.parent / ".submission.csv.cache"
    process = start([*args, "--output_file", out])
    kill_when(process, lambda: cache.is_dir() and len(os.listdir(cache)) >= 20)
    assert not out.exists()  # no partial submission
    assert not [name for name in os.listdir(out.parent) if name.endswith(".tmp")]

    result = check(run_cli(*args, "--output_file", out, "--resume"))
    reused = int(result.stdout.split("reused ")[1].split()[0])
    assert reused >= 20
    assert out.read_bytes() == reference.read_bytes()
    assert not cache.exists()  # cleaned up once the submission is written


def test_retraining_in_place_on_every_row_discards_the_cached_batches(trained_run, tiny_model, small_demo, tmp_path):
    """The usual last step: retrain on every row (--fold -1) into the run folder whose adapter an interrupted
    infer.py was scoring with. That run scores nothing, and `infer.py --resume` must not reuse the old batches."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("oof.csv", "metrics.json"))
    data = tmp_path / "data.csv"
    with open(small_demo / "train.csv", newline="") as f, open(data, "w", newline="") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for _, row in zip(range(300), reader))
    args = ["infer.py", "--adapter", run, "--data_file", data, "--score_max_tokens", "600"]
    out = tmp_path / "out" / "submission.csv"
    cache = out.parent / ".submission.csv.cache"
    process = start([*args, "--output_file", out])
    kill_when(process, lambda: cache.is_dir() and len(os.listdir(cache)) >= 5)

    adapter = run / "adapter_model.safetensors"
    before = adapter.read_bytes()
    result = check(run_cli("train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model,
                              "--train_file", small_demo / "train.csv", "--output_dir", run, "--fold", "-1",
                              "--max_steps", "2"))
    counts = dict(line.rsplit(": ", 1) for line in result.stdout.splitlines() if re.fullmatch(r"[^:]+: \d+", line))
    read = int(counts[f"rows read from {small_demo / 'train.csv'}"])
    assert int(counts["training rows"]) == read - int(counts["duplicates removed"]) and counts["held-out rows"] == "0"
    assert not (run / "oof.csv").exists() and not (run / "metrics.json").exists()
    assert "log loss" not in result.stdout  # nothing was scored
    after = adapter.read_bytes()
    assert len(after) == len(before) and after != before  # retrained: the same shapes, other weights

    result = check(run_cli(*args, "--output_file", out, "--resume"))
    assert "reused" not in result.stdout  # every batch scored again, with the new adapter
    assert out.exists() and not cache.exists()
