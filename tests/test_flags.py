"""Flags that do what they say: every boolean flag of both scripts works bare (`--tta`) and with a value
(`--tta false`); flags that would be ignored or change meaning stop with a clear error."""

import dataclasses
import typing

import pytest

from trl import SFTConfig, TrlParser

from arena.config import DataArgs, ModelArgs, ScoreArgs, TrainConfig, bare_booleans, parse_settings
from arena.errors import DataError
from conftest import run_cli

TRAIN_SETTINGS = (DataArgs, ModelArgs, ScoreArgs, TrainConfig)


def infer_settings():
    from infer import InferArgs

    return (InferArgs, ScoreArgs)


def boolean_fields(settings, own: bool = False) -> list[str]:
    """Every boolean setting (`bool` or `bool | None`); with `own`, this project's only (not trl's SFTConfig's)."""
    trl_fields = {f.name for f in dataclasses.fields(SFTConfig)} if own else set()
    return [f.name for cls in settings for f in dataclasses.fields(cls)
            if typing.get_type_hints(cls)[f.name] in (bool, bool | None) and f.name not in trl_fields]


def value(settings, args: list[str], name: str):
    return next(getattr(s, name) for s in parse_settings(settings, args) if hasattr(s, name))


def parsed(settings, args: list[str]):
    """The flags as parsed, before the settings check them against each other (`--bf16` contradicts a CPU)."""
    parser = TrlParser(settings)
    bare_booleans(parser)
    return parser.parse_args(args)


@pytest.mark.parametrize("script", ["train_unsloth.py", "infer.py"])
def test_every_boolean_flag_works_bare_and_with_a_value(script):
    settings = TRAIN_SETTINGS if script == "train_unsloth.py" else infer_settings()
    names = boolean_fields(settings)
    assert {"tta", "chat_template"} <= set(names) and (script == "infer.py" or "bf16" in names)
    for name in names:
        for given, expected in (([], True), (["true"], True), (["false"], False), (["False"], False)):
            assert getattr(parsed(settings, [f"--{name}", *given]), name) is expected, (name, given)
        assert getattr(parsed(settings, [f"--{name}=false"]), name) is False, name
    base = ["--model", "m"] if script == "train_unsloth.py" else ["--adapter", "runs/x", "--data_file", "x.csv"]
    for name in boolean_fields(settings, own=True):  # this project's: through the settings, bare and false
        assert value(settings, [*base, f"--{name}"], name) is True, name
        assert value(settings, [*base, f"--{name}", "false"], name) is False, name


def test_the_chat_template_flag_works_bare_in_both_scripts():
    assert value(infer_settings(), ["--model", "m", "--chat_template"], "chat_template") is True
    assert value(infer_settings(), ["--model", "m"], "chat_template") is None  # the run's setting
    assert value(infer_settings(), ["--model", "m", "--load_in_4bit"], "load_in_4bit") is True
    assert value(TRAIN_SETTINGS, ["--model", "m", "--chat_template"], "chat_template") is True


def test_degenerate_priors_is_a_training_flag_only(capsys):
    assert value(TRAIN_SETTINGS, ["--model", "m", "--degenerate_priors"], "degenerate_priors") is True
    with pytest.raises(SystemExit) as stop:
        parse_settings(infer_settings(), ["--model", "m", "--degenerate_priors"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --degenerate_priors" in capsys.readouterr().err


def test_temperature_with_no_calibration_stops():
    from infer import main

    args, score = parse_settings(infer_settings(), ["--model", "m", "--data_file", "x.csv", "--no_calibration",
                                                    "--temperature", "2"])
    with pytest.raises(DataError, match="--temperature .* --no_calibration"):
        main(args, score)


@pytest.mark.slow
def test_infer_takes_the_chat_template_flag_bare_from_the_command_line():
    result = run_cli("infer.py", "--model", "m", "--chat_template", "--no_calibration", "--temperature", "2",
                     "--data_file", "x.csv")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: --temperature")


def test_padding_free_with_a_label_head_and_the_token_loss_stops(tmp_path):
    """--label_head with --loss token trains on padded batches: asking for padding-free batches is an error, not
    silently undone."""
    import torch

    from arena.losses import ArenaTrainer

    model = torch.nn.Linear(2, 2)
    model.label_head = torch.nn.Linear(2, 2)
    args = TrainConfig(output_dir=str(tmp_path), loss="token")
    args.padding_free = True  # as --padding_free true stays on a GPU (unsloth's CPU backend turns it off)
    with pytest.raises(DataError, match="--label_head with --loss token trains on padded batches"):
        ArenaTrainer(model=model, args=args, train_dataset=None, processing_class=None, label_ids=[0, 1])
