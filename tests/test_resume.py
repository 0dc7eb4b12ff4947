"""Faults: a training run killed after a checkpoint resumes to the same result; a half-written checkpoint is never
picked; a killed infer.py leaves no partial submission and --resume reuses its finished batches."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from arena.run import latest_checkpoint
from conftest import ROOT, check, run_script

STEPS = ["--max_steps", "40", "--save_strategy", "steps", "--save_steps", "10", "--logging_steps", "10"]


def train_args(tiny_model, demo_data, run):
    return ["train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model,
            "--train_file", demo_data / "train.csv", "--output_dir", run, *STEPS]


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


def test_killed_training_resumes_to_the_uninterrupted_result(tiny_model, demo_data, tmp_path):
    straight = tmp_path / "straight"
    check(run_script(*train_args(tiny_model, demo_data, straight)))

    run = tmp_path / "killed"
    process = start(train_args(tiny_model, demo_data, run))
    kill_when(process, lambda: latest_checkpoint(str(run)) is not None and latest_checkpoint(str(run)).endswith("-20"))
    assert not (run / "metrics.json").exists()

    result = check(run_script(*train_args(tiny_model, demo_data, run), "--resume_from_checkpoint", "latest"))
    assert not (run / "checkpoint-10").exists() or (run / "checkpoint-40").exists()
    a = load_file(straight / "adapter_model.safetensors")
    b = load_file(run / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=key)  # CPU float noise only
    m1 = json.loads((straight / "metrics.json").read_text())
    m2 = json.loads((run / "metrics.json").read_text())
    assert m2["log_loss"] == pytest.approx(m1["log_loss"], abs=1e-4)
    assert "Traceback" not in result.stderr


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_model, demo_data, tmp_path):
    result = run_script(*train_args(tiny_model, demo_data, tmp_path / "empty"), "--resume_from_checkpoint", "latest")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'empty'}: no complete checkpoint to resume from"


def test_killed_inference_leaves_no_file_and_resumes(tiny_model, demo_data, tmp_path):
    args = ["infer.py", "--model", tiny_model, "--data_file", demo_data / "train.csv", "--max_length", "512",
            "--score_max_tokens", "600"]
    reference = tmp_path / "reference.csv"
    check(run_script(*args, "--output_file", reference))

    out = tmp_path / "out" / "submission.csv"
    cache = out.parent / ".submission.csv.cache"
    process = start([*args, "--output_file", out])
    kill_when(process, lambda: cache.is_dir() and len(os.listdir(cache)) >= 20)
    assert not out.exists()  # no partial submission
    assert not [name for name in os.listdir(out.parent) if name.endswith(".tmp")]

    result = check(run_script(*args, "--output_file", out, "--resume"))
    reused = int(result.stdout.split("reused ")[1].split()[0])
    assert reused >= 20
    assert out.read_bytes() == reference.read_bytes()
    assert not cache.exists()  # cleaned up once the submission is written
