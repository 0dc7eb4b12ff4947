"""Settings: every file in configs/ parses into them, and a mistyped flag or config key is argparse's usage line and
one error line naming the closest known flags (exit code 2), from the real scripts too, never a traceback."""

from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from arena.config import DataArgs, ModelArgs, ScoreArgs, TrainConfig, parse_settings
from conftest import ROOT, run_cli

TRAIN_SETTINGS = (DataArgs, ModelArgs, ScoreArgs, TrainConfig)
MODEL_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# unsloth's CPU backend swaps the 8-bit optimizer, which needs a GPU, for this one (and prints that it does)
CPU_SUBSTITUTES = {("optim", "adamw_8bit"): "adamw_torch_fused"}


def usage_error(capsys, args) -> str:
    """The message of a parse that must stop as argparse does: exit code 2, a one-line usage, one error line."""
    with pytest.raises(SystemExit) as stop:
        parse_settings(TRAIN_SETTINGS, args)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: "), lines
    return lines[1].split(": error: ", 1)[1]


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.name)
def test_every_model_config_parses_into_the_settings(path):
    settings = parse_settings(TRAIN_SETTINGS, ["--config", path])
    for key, value in yaml.safe_load(path.read_text()).items():
        got = [getattr(s, key) for s in settings if hasattr(s, key)]
        if not torch.cuda.is_available() and (key, str(value)) in CPU_SUBSTITUTES:
            value = CPU_SUBSTITUTES[key, str(value)]
        assert got == [value], f"{path.name}: {key}: {got} != {value!r}"


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_every_accelerate_config_loads(path):
    config = load_config_from_file(str(path)).to_dict()  # accelerate refuses unknown keys
    for key, value in yaml.safe_load(path.read_text()).items():
        assert config[key] == value, f"{path.name}: {key}"


def test_there_are_configs_to_check():
    assert len(MODEL_CONFIGS) >= 4 and (ROOT / "configs" / "accelerate" / "multi_gpu.yaml").exists()


def test_an_unknown_flag_names_the_closest_known_ones(capsys):
    line = usage_error(capsys, ["--lora_rank", "8", "--bogus_flag", "1", "--learnig_rate=1e-4"])
    assert line == ("unrecognized arguments: --lora_rank (did you mean --lora_r or --local_rank?); --bogus_flag; "
                    "--learnig_rate (did you mean --learning_rate?)")
    assert usage_error(capsys, ["stray.csv"]) == "unrecognized arguments: stray.csv"


def test_config_file_problems_name_the_file(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("seed: 3\nlora_rank: 8\n")
    assert usage_error(capsys, ["--config", config]) == (
        f"{config}: unknown key: lora_rank (did you mean lora_r or local_rank?)")
    config.write_text("- seed\n")
    assert usage_error(capsys, ["--config", config]) == (
        f"--config {config}: expected a YAML mapping of settings (key: value)")
    config.write_text("seed: [3\n")
    assert usage_error(capsys, ["--config", config]).startswith(f"--config {config}: cannot read it (")
    missing = tmp_path / "missing.yaml"
    assert usage_error(capsys, ["--config", missing]).startswith(f"--config {missing}: cannot read it (")
    assert usage_error(capsys, ["--seed", "1", "--config"]) == "--config needs a YAML file"


def test_known_flags_and_keys_still_parse(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("seed: 3\nlora_r: 8\n")
    data, model, _, train = parse_settings(TRAIN_SETTINGS, [f"--config={config}", "--model", "m", "--lora_r=4"])
    assert (train.seed, model.lora_r, model.model_name_or_path) == (3, 4, "m")  # the command line wins


def script_usage_error(*args) -> list[str]:
    result = run_cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-2:]


def test_the_scripts_stop_at_a_mistyped_flag_or_key(tmp_path):
    usage, error = script_usage_error("infer.py", "--data_file", "x.csv", "--score_max_tokns", "100", "--tta")
    assert usage.startswith("usage: infer.py [--config FILE.yaml]")
    assert error == "infer.py: error: unrecognized arguments: --score_max_tokns (did you mean --score_max_tokens?)"
    config = tmp_path / "run.yaml"
    config.write_text(Path(ROOT / "configs" / "demo.yaml").read_text() + "lora_rank: 8\n")
    usage, error = script_usage_error("train_unsloth.py", "--config", config)
    assert usage.startswith("usage: train_unsloth.py [--config FILE.yaml]")
    assert error == (f"train_unsloth.py: error: {config}: unknown key: lora_rank "
                     "(did you mean lora_r or local_rank?)")
