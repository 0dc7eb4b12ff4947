"""Settings as dataclasses. trl's `TrlParser` turns every field into a command-line flag and reads
`--config file.yaml` (flags on the command line win over the file). Training settings are trl's own `SFTConfig`
(learning_rate, per_device_train_batch_size, num_train_epochs, save_steps, ...), with the defaults below changed."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field

import torch
import yaml
from trl import SFTConfig

from arena.prompts import DEFAULT_LABELS

DEFAULT_TEMPLATE = "prompts/two_conversations.txt"
ZERO_SHOT_TEMPLATE = "prompts/zero_shot.txt"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ListFlag(argparse.Action):
    """A list flag that takes several values and can be repeated (`--train_file a.csv --train_file b.csv`); on the
    command line it replaces the --config file's list rather than adding to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest)
        setattr(namespace, self.dest, (given if given is not self.default else []) + list(values))


@dataclass
class ModelArgs:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model: a hub name or a local folder.", "aliases": ["--model"]}
    )
    load_in_4bit: bool = field(default=True, metadata={"help": "Load the base weights in 4-bit NF4 (QLoRA)."})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    use_gradient_checkpointing: str = field(
        default="unsloth", metadata={"help": "'unsloth' (offloaded), 'true' (standard) or 'false'."}
    )
    label_head: bool = field(
        default=False,
        metadata={"help": "Train a scale and a bias on each label's logit too (arena/label_head.py); saved with the "
                          "adapter. For tied-embedding models such as Gemma-2."},
    )


@dataclass
class DataArgs:
    train_file: list[str] = field(
        default_factory=list,
        metadata={"help": "Labelled file(s) split into folds; repeat or list several.", "action": ListFlag},
    )
    extra_file: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra training file(s), never held out (33k set, HH-RLHF, UltraFeedback, ...).",
                  "action": ListFlag},
    )
    n_folds: int = 5
    fold: int = field(default=0, metadata={"help": "Held-out fold; -1 trains on every row and scores nothing."})
    prompt_template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "Template file in prompts/."})
    labels: list[str] = field(
        default_factory=lambda: list(DEFAULT_LABELS), metadata={"help": "Label texts for A wins, B wins, tie."}
    )
    chat_template: bool = field(
        default=False,
        metadata={"help": "Wrap the prompt as one user message in the tokenizer's chat template (the label follows "
                          "the assistant's header)."},
    )
    on_bad_row: str = field(
        default="error", metadata={"help": "'error' stops at a bad row; 'skip' skips it and lists it in the run folder."}
    )
    dry_run: bool = field(default=False, metadata={"help": "Print data statistics and stop before training."})


@dataclass
class ScoreArgs:
    score_max_tokens: int = field(
        default=16384, metadata={"help": "Scoring batch budget: rows x padded length, in tokens."}
    )
    tta: bool = field(default=False, metadata={"help": "Also score with A and B swapped and average."})


@dataclass
class TrainConfig(SFTConfig):
    """trl's SFTConfig with this project's defaults; `max_length` is the prompt budget, label included."""

    max_length: int | None = field(default=3072, metadata={"help": "Token budget per row, label included."})
    output_dir: str | None = field(default="runs/default", metadata={"help": "The run folder."})
    learning_rate: float = 2e-4
    logging_steps: float = 10
    save_total_limit: int | None = 2
    report_to: None | str | list[str] = "none"

    def __post_init__(self):
        if self.bf16 is None and not self.fp16 and torch.cuda.is_available():
            # unset: bf16 where the GPU has it (Ampere and newer), else fp16 (T4, V100, P100), as unsloth loads them
            self.bf16 = torch.cuda.is_bf16_supported()
            self.fp16 = not self.bf16
        super().__post_init__()


def save_config(path: str, *configs) -> None:
    """The resolved settings of a run, one YAML mapping (what `--config` reads back)."""
    from arena.io import write_text

    merged = {}
    for config in configs:
        merged.update(config.to_dict() if hasattr(config, "to_dict") else asdict(config))
    write_text(path, yaml.safe_dump(merged, sort_keys=True, allow_unicode=True))


def load_run_config(folder: str) -> dict:
    path = os.path.join(folder, "config.yaml")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}
