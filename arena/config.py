"""Settings as dataclasses. trl's `TrlParser` turns every field into a command-line flag and reads
`--config file.yaml` (flags on the command line win over the file). Training settings are trl's own `SFTConfig`
(learning_rate, per_device_train_batch_size, num_train_epochs, save_steps, ...), with the defaults below changed."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import asdict, dataclass, field

import torch
import yaml
from trl import SFTConfig, TrlParser

from arena.errors import DataError
from arena.label_head import head_kind
from arena.loading import DTYPE_HELP, compute_dtype
from arena.prompts import DEFAULT_LABELS, DEFAULT_MAX_LENGTH

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
    label_head: str = field(
        default="none",
        metadata={"help": "The label logits from a head of their own (arena/label_head.py), saved with the adapter: "
                          "'rows' (the bare flag) starts from the LM head's rows of the label tokens, untied; "
                          "'scaled' is those rows times a scale, scale and bias fitted to a sample of the training "
                          "rows (a calibration as the start); 'fresh' is a new classification head; 'rows' and "
                          "'fresh' start with a bias that makes the mean prediction the training labels' frequencies. "
                          "'none': the LM head's own rows. With --loss token, batches are padded (--padding_free "
                          "true stops with an error)."},
    )

    def __post_init__(self):
        self.label_head = head_kind(self.label_head)


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
    fold: str = field(
        default="0",
        metadata={"help": "Held-out fold; -1 trains on every row and scores nothing; 'all' trains every fold in turn "
                          "(fold-<k>/ run folders, one oof.csv, CV metrics.json; finished folds are skipped)."},
    )
    prompt_template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "Template file in prompts/."})
    labels: list[str] = field(
        default_factory=lambda: list(DEFAULT_LABELS),
        metadata={"help": "Label texts for A wins, B wins, tie; two for two-way data (WSDM layout): ' A' ' B'."},
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
    teacher_file: list[str] = field(
        default_factory=list,
        metadata={"help": "Soft labels: prediction file(s) with id and the three probability columns (an oof.csv, "
                          "a submission, truth.csv); several are averaged. Needs --loss label.", "action": ListFlag},
    )

    def __post_init__(self):
        if str(self.fold) != "all":
            try:
                self.fold = int(self.fold)
            except ValueError:
                raise DataError(f"--fold must be a fold number, -1 or 'all', got {self.fold!r}") from None


@dataclass
class ScoreArgs:
    score_max_tokens: int | None = field(
        default=None, metadata={"help": "Scoring batch budget: rows x padded length, in tokens; default 16384 on a "
                                        "GPU, 1024 on a CPU (where bigger batches are slower)."}
    )
    tta: bool = field(default=False, metadata={"help": "Also score with A and B swapped and average."})


@dataclass
class TrainConfig(SFTConfig):
    """trl's SFTConfig with this project's defaults; `max_length` is the prompt budget, label included."""

    max_length: int | None = field(default=DEFAULT_MAX_LENGTH, metadata={"help": "Token budget per row, label included."})
    output_dir: str | None = field(default="runs/default", metadata={"help": "The run folder."})
    learning_rate: float = 2e-4
    logging_steps: float = 10
    save_total_limit: int | None = 2
    report_to: None | str | list[str] = "none"
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})
    # this project's training settings (arena/losses.py)
    loss: str = field(
        default="token",
        metadata={"help": "'token': cross-entropy over the whole vocabulary at the label position; 'label': over "
                          "the label tokens' logits only.", "choices": ["token", "label"]},
    )
    swap_augment: bool = field(
        default=False, metadata={"help": "Train each battle as it is or with A and B swapped (a seeded coin per "
                                         "battle; the other side in the next epoch)."}
    )
    distill_alpha: float = field(
        default=0.5, metadata={"help": "With --teacher_file: weight of the hard-label loss; 1 - alpha goes to the KL."}
    )
    distill_temperature: float = field(default=1.0, metadata={"help": "With --teacher_file: the KL's temperature."})
    degenerate_priors: bool = field(
        default=False,
        metadata={"help": "Learn priors for one_empty and identical rows from the training labels, blended in with a "
                          "weight fitted on the held-out rows (stored in calibration.json; infer.py applies them)."},
    )

    def __post_init__(self):
        # the trainer's mixed precision follows the compute dtype (set before SFTConfig derives its own from it)
        dtype = compute_dtype(self.dtype)
        if dtype is not None:
            if (self.bf16 and dtype != torch.bfloat16) or (self.fp16 and dtype != torch.float16):
                raise DataError(f"--bf16/--fp16 contradict --dtype {self.dtype}; set the precision with --dtype alone")
            self.bf16, self.fp16 = dtype == torch.bfloat16, dtype == torch.float16
        elif self.bf16 is None and not self.fp16:
            # auto on a GPU: bf16 where the GPU has it (Ampere and newer), else fp16 (T4, V100), as unsloth loads them
            self.bf16 = torch.cuda.is_bf16_supported()
            self.fp16 = not self.bf16
        super().__post_init__()


def config_yaml(*configs) -> str:
    """The resolved settings of a run, one YAML mapping (what `--config` reads back; the run folder's config.yaml)."""
    merged = {}
    for config in configs:
        merged.update(config.to_dict() if hasattr(config, "to_dict") else asdict(config))
    return yaml.safe_dump(merged, sort_keys=True, allow_unicode=True)


USAGE = "%(prog)s [--config FILE.yaml] [--FLAG VALUE ...]  (every flag: --help)"


def parse_settings(dataclass_types, args: list[str] | None = None) -> tuple:
    """The settings from the command line and the --config file, as trl's TrlParser reads them. An unknown flag or
    config key, or an unreadable config file, stops with argparse's usage line and one error line naming the closest
    known flags (exit code 2) instead of trl's ValueError and its traceback."""
    parser = TrlParser(dataclass_types, usage=USAGE)
    bare_booleans(parser)
    args = sys.argv[1:] if args is None else [str(a) for a in args]
    # trl reads "--config FILE" only
    args = [part for a in args for part in (a.split("=", 1) if a.startswith("--config=") else [a])]
    config = None
    if "--config" in args:
        at = args.index("--config")
        if at + 1 == len(args):
            parser.error("--config needs a YAML file")
        config = args[at + 1]
        check_config_file(parser, config)
    *settings, config_rest, args_rest = parser.parse_args_and_config(
        args, return_remaining_strings=True, separate_remaining_strings=True
    )
    flags = sorted({s for a in parser._actions for s in a.option_strings if "-" not in s[2:]} | {"--config"})
    unknown = [s.split("=")[0] for s in args_rest if s.startswith("--")]
    if unknown:
        parser.error("unrecognized arguments: " + "; ".join(did_you_mean(s, flags) for s in unknown))
    if args_rest:
        parser.error("unrecognized arguments: " + " ".join(args_rest))
    if config_rest:
        keys = sorted({a.dest for a in parser._actions} - {"help"})
        names = [did_you_mean(k[2:], keys) for k in config_rest[0::2]]
        parser.error(f"{config}: unknown key{'s' * (len(names) > 1)}: " + "; ".join(names))
    return tuple(settings)


def bare_booleans(parser) -> None:
    """Every boolean flag works bare (`--tta`, `--chat_template`) as well as with a value (`--tta false`).
    transformers' parser makes a flag of a `bool | None` field (default None: "the run's setting") take a value
    always; here it takes one optionally, as the plain `bool` flags do. `--label_head` bare is `rows`."""
    for action in parser._actions:
        if getattr(action.type, "__name__", "") == "string_to_bool" and action.nargs is None:
            action.nargs, action.const = "?", True
        if action.dest == "label_head":
            action.nargs, action.const = "?", "rows"


def check_config_file(parser, path: str) -> None:
    """A --config file that trl would fail on with a traceback (missing, not YAML, not a mapping) is a usage error."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        parser.error(f"--config {path}: cannot read it ({' '.join(str(e).split())})")
    if not isinstance(config, dict):
        parser.error(f"--config {path}: expected a YAML mapping of settings (key: value)")


def did_you_mean(name: str, known: list[str]) -> str:
    """`name`, with the closest of `known`: up to three within 0.1 of the best difflib ratio (at least 0.6), those
    sharing the longest prefix with `name` first."""
    scored = sorted(((difflib.SequenceMatcher(None, name, k).ratio(), k) for k in known), reverse=True)[:3]
    close = [k for ratio, k in scored if ratio >= max(0.6, scored[0][0] - 0.1)]
    close.sort(key=lambda k: -len(os.path.commonprefix([name, k])))  # stable: ties keep the ratio order
    return f"{name} (did you mean {' or '.join(close)}?)" if close else name
