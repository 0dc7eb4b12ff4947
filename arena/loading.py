"""Loading a model: the compute dtype, unsloth's loader (a base model or a run's adapter on its base), loading local
folders without asking the model hub, the check that a given base is the one an adapter was trained on, and the
dtypes a loaded model computes and trains in."""

from __future__ import annotations

import contextlib
import os
import tempfile

import torch

from arena.errors import DataError
from arena.io import write_json
from arena.run_folder import ADAPTER_CONFIG, BASE_MODEL, adapter_base, adapter_config, is_adapter, path, read_base_facts

BASE_FACTS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_HELP = ("Compute dtype: auto (float32 on a CPU, whatever the CPU supports; on a GPU unsloth's choice: bfloat16 "
              "where supported, else float16), float32, bfloat16 or float16.")


def compute_dtype(name: str) -> torch.dtype | None:
    """The torch dtype for a --dtype setting; None lets unsloth choose (auto on a GPU). On a CPU, auto is float32 so
    that results do not depend on whether the CPU has native bf16 (unsloth would compute in bf16 there)."""
    if name not in DTYPES:
        raise DataError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name == "auto":
        return None if torch.cuda.is_available() else torch.float32
    if name == "float16" and not torch.cuda.is_available():
        raise DataError("--dtype float16 needs a GPU (a CPU only emulates float16); use float32 or bfloat16")
    return getattr(torch, name)


def load_model(
    name: str, max_length: int, load_in_4bit: bool = True, load_in_8bit: bool = False, dtype: str = "auto",
    base: str | None = None,
):
    """unsloth's loader for a base model or a saved LoRA adapter folder (its base is read from adapter_config.json,
    or is `base` when given, and the adapter put on top). Returns (model, tokenizer). Weights: 4-bit NF4, or 8-bit
    (bitsandbytes LLM.int8; wins over `load_in_4bit`), or neither: 16-bit. `dtype` is a --dtype setting.

    A local folder (and a local adapter's local base) is loaded with `local_files_only`: otherwise unsloth's GPU
    loader asks the model hub whether the folder is an adapter repo, and an offline machine waits on its retries."""
    from unsloth import FastLanguageModel

    torch_dtype = compute_dtype(dtype)
    with adapter_on_base(local_path(name), base) as folder:
        adapter = is_adapter(folder)
        if adapter and os.path.isabs(adapter_base(folder)) and not os.path.isdir(adapter_base(folder)):
            raise DataError(f"{name}: the adapter's base model {adapter_base(folder)} (from {ADAPTER_CONFIG}) is not "
                            "on this machine; give its local copy with --model")
        return FastLanguageModel.from_pretrained(
            model_name=folder, max_seq_length=max_length, dtype=torch_dtype,
            load_in_4bit=load_in_4bit and not load_in_8bit, load_in_8bit=load_in_8bit,
            **local_only(adapter_base(folder) if adapter else folder),
        )


def local_path(name: str) -> str:
    """A local folder as an absolute path (the adapter then records a base that resolves from any working folder,
    and no hub call can mistake it for a repo id); a hub name as it is."""
    return os.path.abspath(name) if os.path.isdir(name) else name


def local_only(name: str) -> dict:
    """from_pretrained's keyword for a model that is a local folder: never ask the hub about it."""
    return {"local_files_only": True} if os.path.isdir(name) else {}


def base_facts(config) -> dict:
    """What an adapter needs of its base: architecture and sizes (from a transformers config)."""
    facts = {key: getattr(config, key, None) for key in BASE_FACTS}
    facts["architectures"] = list(getattr(config, "architectures", None) or [])
    return facts


@contextlib.contextmanager
def adapter_on_base(name: str, base: str | None):
    """`name` itself, or with `base`: a temporary copy of the adapter folder whose adapter_config.json names `base`
    (the files are links), after checking that `base` is the kind of model the adapter was trained on."""
    if base is None:
        yield name
        return
    if not is_adapter(name):
        raise DataError(f"{name}: not an adapter folder (no {ADAPTER_CONFIG}), so it cannot be put on --model {base}")
    check_base(name, base)
    with tempfile.TemporaryDirectory(prefix="adapter-on-base-") as folder:
        for entry in os.listdir(name):
            if entry != ADAPTER_CONFIG:
                os.symlink(os.path.abspath(os.path.join(name, entry)), os.path.join(folder, entry))
        config = adapter_config(name)
        config["base_model_name_or_path"] = local_path(base)
        write_json(path(folder, ADAPTER_CONFIG), config)
        yield folder


def check_base(run: str, base: str) -> None:
    """Refuses a base model whose architecture or sizes differ from those the adapter in `run` was trained on
    (recorded in the run's base_model.json), reading only the base's config, not its weights."""
    from transformers import AutoConfig

    recorded = read_base_facts(run)
    if recorded is None:
        raise DataError(f"{run}: no {BASE_MODEL} (a run from an older version), so --model cannot be checked "
                        "against the adapter; leave --model out to use the base named in its adapter_config.json")
    try:
        config = AutoConfig.from_pretrained(base, **local_only(base))
    except (OSError, ValueError) as e:
        raise DataError(f"{base}: cannot read the base model's config ({str(e).splitlines()[0]})") from None
    given = base_facts(config)
    wrong = [f"{key} {given[key]!r} (the adapter's base: {recorded.get(key)!r})"
             for key in (*BASE_FACTS, "architectures") if given[key] != recorded.get(key)]
    if wrong:
        raise DataError(f"{base}: does not match the adapter in {run}: " + "; ".join(wrong))


def adapters_to_float32(model) -> None:
    """Keeps the LoRA weights in float32, peft's own default. trl casts a quantized model's adapters to bf16; left so,
    the model trained here and the same adapter reloaded (peft upcasts bf16 adapters to float32 on loading) compute
    different functions, and where bf16 is not native every LoRA matmul is emulated (training took 3.8x as long:
    bench/adapter_dtype.py). Call after building the trainer."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def precision(model) -> dict[str, str]:
    """The dtypes a model computes in and its trainable (LoRA) weights are stored in, for metrics.json."""
    trainable = {dtype_name(p.dtype) for p in model.parameters() if p.requires_grad}
    return {"dtype": dtype_name(model.dtype), "adapter_dtype": ",".join(sorted(trainable)) or "none"}
