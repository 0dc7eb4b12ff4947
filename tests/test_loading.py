"""Loading models from local folders: nothing asks the model hub (an offline machine, a Kaggle notebook, would wait
on retries), and `infer.py --adapter RUN --model BASE` puts the adapter on a local copy of its base after checking
that the copy is the same kind of model."""

import json
import shutil

import numpy as np
import pytest

from bench.gpu_check import HubRecorder
from conftest import check, read_probabilities, run_cli, run_scripts

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make test-quick`

ONLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # left out: the scripts must stay off the hub on their own


@pytest.fixture
def fake_hub():
    """A local HTTP server standing in for the model hub (HF_ENDPOINT): it records every request and answers 404."""
    hub = HubRecorder()
    yield {"HF_ENDPOINT": hub.url}, hub.requests
    hub.server.shutdown()


def moved_run(trained_run, tmp_path):
    """A copy of the run whose adapter_config.json names a base that is not on this machine (trained elsewhere)."""
    run = tmp_path / "moved-run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((run / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "where-training-ran" / "base")
    (run / "adapter_config.json").write_text(json.dumps(config))
    return run


def test_local_folders_never_ask_the_hub(fake_hub, trained_run, tiny_model, demo_data, tmp_path):
    env, requests = fake_hub
    data = ["--data_file", demo_data / "test.csv"]
    runs = [
        ("infer.py", "--model", tiny_model, *data, "--output_file", tmp_path / "zero-shot.csv"),
        ("infer.py", "--adapter", trained_run, *data, "--output_file", tmp_path / "adapter.csv"),
        ("infer.py", "--adapter", trained_run, "--model", tiny_model, *data, "--output_file", tmp_path / "base.csv"),
        ("train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model, "--train_file",
         demo_data / "train.csv", "--output_dir", tmp_path / "dry", "--dry_run"),
    ]
    result = check(run_scripts(*runs, env=env, unset=ONLINE))  # one process: HF_ENDPOINT is read on import
    assert result.stdout.count("$ ") == len(runs)  # every run ran
    assert "127.0.0.1" not in result.stderr and "Retrying" not in result.stderr
    assert requests == []


def test_an_adapter_goes_on_the_base_given_with_model(trained_run, tiny_model, demo_data, tmp_path):
    run = moved_run(trained_run, tmp_path)
    base = tmp_path / "base-copy"
    shutil.copytree(tiny_model, base)
    data = ["--data_file", demo_data / "test.csv"]
    result = run_cli("infer.py", "--adapter", run, *data, "--output_file", tmp_path / "none.csv")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {run}: the adapter's base model {tmp_path / 'where-training-ran' / 'base'} (from adapter_config.json) "
        "is not on this machine; give its local copy with --model")
    check(run_cli("infer.py", "--adapter", run, "--model", base, *data, "--output_file", tmp_path / "on-copy.csv"))
    check(run_cli("infer.py", "--adapter", trained_run, *data, "--output_file", tmp_path / "original.csv"))
    on_copy, original = read_probabilities(tmp_path / "on-copy.csv"), read_probabilities(tmp_path / "original.csv")
    assert on_copy.keys() == original.keys() and len(on_copy) == 60
    assert np.std(list(original.values())) > 0.05  # the trained adapter is really there: the match means something
    for row_id in original:
        np.testing.assert_allclose(on_copy[row_id], original[row_id], atol=1e-6)  # same weights, same function
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"].endswith("base")  # kept


def test_a_base_that_does_not_match_the_adapter_is_refused(trained_run, tiny_model, demo_data, tmp_path):
    wrong = tmp_path / "wrong-base"
    wrong.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    config.update(hidden_size=2 * config["hidden_size"], vocab_size=config["vocab_size"] + 64)
    (wrong / "config.json").write_text(json.dumps(config))  # no weights at all: the check must come before them
    args = ["infer.py", "--adapter", trained_run, "--model", wrong, "--data_file", demo_data / "test.csv",
            "--output_file", tmp_path / "out.csv"]
    result = run_cli(*args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {wrong}: does not match the adapter in {trained_run}: vocab_size {config['vocab_size']} "
        f"(the adapter's base: {config['vocab_size'] - 64}); hidden_size {config['hidden_size']} "
        f"(the adapter's base: {config['hidden_size'] // 2})")
    assert not (tmp_path / "out.csv").exists()

    old_run = tmp_path / "old-run"
    shutil.copytree(trained_run, old_run, ignore=shutil.ignore_patterns("checkpoint-*", "base_model.json"))
    result = run_cli(*args[:2], old_run, "--model", tiny_model, *args[5:])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {old_run}: no base_model.json")
