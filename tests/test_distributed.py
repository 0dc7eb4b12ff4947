"""Two real processes on this CPU (`accelerate launch --multi_gpu`, torchrun and gloo underneath): data-parallel
training that writes one run folder, and inference split across processes that equals one process's output."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from arena.data import LABEL_COLUMNS
from conftest import ROOT, check, run_cli

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`
from trace_files import read_trace

# With accelerate's split_batches, two processes take halves of the very batches one process takes, so they compute
# the same gradients up to the order of float additions: measured 2e-6 apart after 60 steps. (Without it, each
# process draws its own batches: a valid run, but another trajectory, and this tiny model's learning curve is
# too steep for a tolerance that would still catch a bug.)
LOG_LOSS_TOLERANCE = 1e-3
# logging_steps divides max_steps: the trainer gathers the loss across processes at each logging step, but adds
# the steps after the last one from the main process's share of the batch alone (transformers' _finalize_training)
SHORT_RUN = ["--config", "configs/demo.yaml", "--max_steps", "60", "--per_device_train_batch_size", "16",
             "--logging_steps", "20", "--label_head", "rows"]  # the label head trains across processes too


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, processes=2):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *map(str, args)]
    return check(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900))


def read_oof(path):
    with open(path, newline="") as f:
        return {r["id"]: np.array([float(r[c]) for c in LABEL_COLUMNS]) for r in csv.DictReader(f)}


def test_two_process_training_matches_a_single_process_run(tiny_model, small_demo, tmp_path):
    data = ["--model", tiny_model, "--train_file", small_demo / "train.csv"]
    check(run_cli("train_unsloth.py", *SHORT_RUN, *data, "--output_dir", tmp_path / "one"))
    two = tmp_path / "two"
    launch("tests/trace_files.py", tmp_path / "trace", two, "train_unsloth.py", *SHORT_RUN, *data,
           "--output_dir", two, "--accelerator_config", '{"split_batches": true}')
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    multi = json.loads((two / "metrics.json").read_text())
    assert single["world_size"] == 1 and multi["world_size"] == 2
    assert single["log_loss"] < 1.0  # 60 steps already moved it off the class prior: the match means something
    assert abs(multi["log_loss"] - single["log_loss"]) < LOG_LOSS_TOLERANCE
    assert abs(multi["train_loss"] - single["train_loss"]) < LOG_LOSS_TOLERANCE
    # every held-out row scored once, gathered in order: each id has the single-process probabilities
    one_oof, two_oof = read_oof(tmp_path / "one" / "oof.csv"), read_oof(two / "oof.csv")
    assert list(two_oof) == list(one_oof)
    for row_id, probs in two_oof.items():
        np.testing.assert_allclose(probs, one_oof[row_id], atol=LOG_LOSS_TOLERANCE, err_msg=row_id)
    # only the main process writes the run folder
    written = [{os.path.relpath(path, two) for kind, path in read_trace(f"{tmp_path / 'trace'}.{rank}") if kind in "wd"}
               for rank in (0, 1)]
    assert {"oof.csv", "metrics.json", "config.yaml", "folds.csv", "prompt.txt", "versions.json",
            "label_head.safetensors"} <= written[0]
    assert written[1] == set()


def test_two_process_inference_equals_one_process(trained_run, small_demo, tmp_path):
    args = ["infer.py", "--adapter", trained_run, "--data_file", small_demo / "train.csv", "--tta"]
    check(run_cli(*args, "--output_file", tmp_path / "one" / "submission.csv"))
    launch(*args, "--output_file", tmp_path / "two" / "submission.csv")
    one = np.loadtxt(tmp_path / "one" / "submission.csv", delimiter=",", skiprows=1, dtype=str)
    two = np.loadtxt(tmp_path / "two" / "submission.csv", delimiter=",", skiprows=1, dtype=str)
    assert (one[:, 0] == two[:, 0]).all()
    np.testing.assert_allclose(one[:, 1:].astype(float), two[:, 1:].astype(float), atol=1e-5)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["world_size"] == 2 and m2["log_loss"] == pytest.approx(m1["log_loss"], abs=1e-5)
