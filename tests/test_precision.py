"""Same numbers on every CPU. The compute dtype is float32 on a CPU unless asked otherwise, also where the CPU has
native bf16 (emulated here: UNSLOTH_CPU_BF16=1 makes unsloth's bf16 detection answer "supported", as it does on an
AMX / AVX512-BF16 machine), and a bfloat16 run scores the same after training as after reloading its adapter."""

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import check, read_probabilities, run_cli, run_script, same_result_tolerance, write_held_out

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`

BF16_CPU = {"UNSLOTH_CPU_BF16": "1"}
SHORT = ["--config", "configs/demo.yaml", "--max_steps", "20", "--per_device_train_batch_size", "8"]


def train(tiny_model, small_demo, run, *extra, env=None):
    """In this process, or with `env` in a process of its own (unsloth reads UNSLOTH_CPU_BF16 on import)."""
    args = ["train_unsloth.py", *SHORT, "--model", tiny_model, "--train_file", small_demo / "train.csv",
            "--output_dir", run, *extra]
    return check(run_script(*args, env=env) if env else run_cli(*args))


def test_auto_dtype_is_float32_also_where_the_cpu_has_bf16(tiny_model, small_demo, tmp_path):
    train(tiny_model, small_demo, tmp_path / "plain")
    emulated = train(tiny_model, small_demo, tmp_path / "bf16-cpu", env=BF16_CPU)
    assert "bfloat16 = True" in emulated.stdout  # the emulation took effect (unsloth's banner, printed on import)
    metrics = {}
    for name in ("plain", "bf16-cpu"):
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics[name]["dtype"] == "float32" and metrics[name]["adapter_dtype"] == "float32", metrics[name]
        assert yaml.safe_load((tmp_path / name / "config.yaml").read_text())["dtype"] == "auto"
    a, b = read_probabilities(tmp_path / "plain" / "oof.csv"), read_probabilities(tmp_path / "bf16-cpu" / "oof.csv")
    assert a.keys() == b.keys()
    tolerance = same_result_tolerance(torch.float32)
    for row_id in a:
        np.testing.assert_allclose(b[row_id], a[row_id], atol=tolerance)
    assert metrics["bf16-cpu"]["train_loss"] == pytest.approx(metrics["plain"]["train_loss"], abs=tolerance)
    assert np.std(list(a.values())) > 0.05  # far from uniform predictions: the match means something


def test_bfloat16_run_scores_the_same_after_training_as_after_reloading(tiny_model, small_demo, tmp_path):
    run = tmp_path / "run"
    train(tiny_model, small_demo, run, "--dtype", "bfloat16", env=BF16_CPU)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dtype"] == "bfloat16" and metrics["adapter_dtype"] == "float32", metrics
    out = tmp_path / "pred" / "submission.csv"
    data = write_held_out(run, small_demo / "train.csv", tmp_path / "heldout.csv")
    check(run_script("infer.py", "--adapter", run, "--data_file", data, "--output_file", out, "--no_calibration",
                        env=BF16_CPU))
    assert json.loads((out.parent / "metrics.json").read_text())["dtype"] == "bfloat16"  # the run's dtype
    oof, reloaded = read_probabilities(run / "oof.csv"), read_probabilities(out)
    assert oof.keys() == reloaded.keys()
    # the same function on the same batches, so equal up to float32 output rounding: a model still scored under
    # the trainer's bf16 autocast, or adapters of another dtype, differ by far more
    for row_id in oof:
        np.testing.assert_allclose(reloaded[row_id], oof[row_id], atol=1e-6)


def test_float16_on_a_cpu_is_a_clear_error(tiny_model, small_demo, tmp_path):
    result = run_cli("train_unsloth.py", *SHORT, "--model", tiny_model, "--train_file", small_demo / "train.csv",
                        "--output_dir", tmp_path, "--dtype", "float16")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --dtype float16 needs a GPU (a CPU only emulates float16); use float32 or bfloat16")
    result = run_cli("train_unsloth.py", *SHORT, "--model", tiny_model, "--train_file", small_demo / "train.csv",
                        "--output_dir", tmp_path, "--dtype", "float32", "--bf16", "true")
    assert result.returncode == 1
    assert "contradict --dtype float32" in result.stderr.strip().splitlines()[-1]
