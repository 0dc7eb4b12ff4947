"""The seed thread's comparisons on a real model and real battles: held-out log loss and accuracy of each arm,
median and range over seeds, on human-labelled LLMEval^2 battles (../shared/data/llmeval2.csv, three-way with ties).

    python tools/real_model.py                      # the model: runs/smollm2-135m-instruct (`make real-model`)
    OMP_NUM_THREADS=1 nohup python bench/real_model.py > runs/real-model-bench.log 2>&1 &
    python bench/real_model.py --train_rows 2000 --heldout_rows 500 --max_length 1024 --max_steps 500 --seeds 0 1 2

One split, budget and step count for every arm: the rows whose rendered prompt fits --max_length tokens uncut, a
seeded draw of --train_rows for training and --heldout_rows held out (the same for every seed and arm). Arms:
- prior: the training rows' class frequencies;
- longer: "the longer answer wins" as a probability model, a 3-class logistic regression on the answers' relative
  length difference d = (len A - len B) / (len A + len B) and |d| (characters), fitted on the training rows;
- zero-shot plain / zero-shot chat: infer.py --model on the base, the zero-shot prompt, without / with the
  tokenizer's chat template (deterministic: one value for all seeds);
- sft token (the seed recipe), sft label (--loss label), label head (--label_head), swap (--swap_augment): each
  train_unsloth.py --fold -1 on the training rows, then infer.py --adapter on the held-out rows; tta: the sft token
  run scored with --tta;
- class head: AutoModelForSequenceClassification on the same model folder (a 3-way score head on the last token),
  LoRA on the same modules (peft) plus the trained head, the same rows, prompt, steps, batch, learning rate and
  schedule, a plain torch loop (here only: the product trains the label token).
Beside each arm's median and range over seeds: its log loss minus the prior's (and minus sft token's) on the same
held-out rows, averaged over seeds, with a 95% bootstrap interval over the rows (the held-out sample's noise, not
the seeds'). The seed sets the LoRA init and the data order. Every arm x seed result is saved as it finishes
(RUNS/results.json) and reused on a rerun with the same settings; then bench/results/real_model_cpu.json and
docs/real_model_cpu.png are written. The model's float32 weights are used (--load_in_4bit false: the GGUF's own
values; on a CPU as fast as NF4 for both scoring and training, bench/cpu_speed.py).
"""

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_unsloth  # noqa: E402  (imports unsloth first)
import infer  # noqa: E402
from trl import TrlParser  # noqa: E402

from arena.config import DEFAULT_TEMPLATE, LORA_TARGETS, ZERO_SHOT_TEMPLATE, DataArgs, ModelArgs, ScoreArgs, TrainConfig  # noqa: E402
from arena.data import CLASS_NAMES, read_pairs  # noqa: E402
from arena.io import atomic_open, write_json  # noqa: E402
from arena.predictions import read_predictions, write_predictions  # noqa: E402
from arena.prompts import Renderer, read_template  # noqa: E402
from arena.scoring import class_prior, metrics, pair_sequences  # noqa: E402
from bench.common import REAL_DATA, REAL_MODEL, ROOT, check_real_inputs, read_json  # noqa: E402

SFT = {"sft token": [], "sft label": ["--loss", "label"], "label head": ["--label_head"],
       "swap": ["--swap_augment"]}
ARMS = ["prior", "longer", "zero-shot plain", "zero-shot chat", *SFT, "tta", "class head"]
DETERMINISTIC = {"prior", "longer", "zero-shot plain", "zero-shot chat"}  # no seed: one value


class Missing(Exception):
    """Something the benchmark needs is absent: one line."""


# ---- data


def fitting_rows(data: str, model: str, max_length: int) -> list[str]:
    """The ids of the rows whose longest rendering, the zero-shot prompt in the chat template, fits `max_length`
    uncut (the label included): no arm sees a cut text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    pairs = read_pairs(data)
    renderer = Renderer(tokenizer, read_template(ZERO_SHOT_TEMPLATE), max_length=10**6, chat_template=True)
    return [p.id for p, ids in zip(pairs, pair_sequences(renderer, pairs)) if len(ids) + 1 <= max_length]


def write_split(data: str, ids: list[str], train_rows: int, heldout_rows: int, folder: str) -> tuple[str, str]:
    """train.csv and heldout.csv in `folder`: a draw (seed 0) of the fitting rows, in the file's own layout."""
    import csv

    if len(ids) < train_rows + heldout_rows:
        raise Missing(f"only {len(ids)} rows fit the budget; ask for fewer than {train_rows} + {heldout_rows}")
    chosen = random.Random(0).sample(ids, train_rows + heldout_rows)
    parts = {"train.csv": set(chosen[:train_rows]), "heldout.csv": set(chosen[train_rows:])}
    with open(data, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    for name, keep in parts.items():
        with atomic_open(os.path.join(folder, name)) as out:
            writer = csv.DictWriter(out, reader.fieldnames)
            writer.writeheader()
            writer.writerows(r for r in rows if r["id"] in keep)
    return os.path.join(folder, "train.csv"), os.path.join(folder, "heldout.csv")


# ---- per-row predictions (for paired comparisons between arms on the same rows)


def predictions_file(folder: str, arm: str, seed: int) -> str | None:
    """Where an arm's held-out probabilities are (infer.py's output file, or the class head's own); None for the
    arms computed in the report (prior, longer)."""
    if arm.startswith("zero-shot"):
        return os.path.join(folder, arm.replace(" ", "-"), "heldout.csv")
    if arm == "class head":
        return os.path.join(folder, f"seed{seed}", "class-head", "heldout.csv")
    if arm == "tta":
        return os.path.join(folder, f"seed{seed}", "sft-token", "heldout-tta.csv")
    if arm in SFT:
        return os.path.join(folder, f"seed{seed}", arm.replace(" ", "-"), "heldout.csv")
    return None


def row_losses(path: str, heldout) -> "np.ndarray":
    """Each held-out row's negative log probability of its label, from a predictions file, in `heldout`'s order."""
    probs = read_predictions(path).by_id()
    return np.array([-np.log(max(probs[p.id][p.label], 1e-15)) for p in heldout])


def paired(losses: "np.ndarray", reference: "np.ndarray", draws: int = 2000) -> dict:
    """Mean per-row log loss difference (arm - reference) on the same rows, with a 95% bootstrap interval over rows."""
    diff = losses - reference
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high)}


# ---- arms without a language model


def labels_of(pairs) -> "np.ndarray":
    import numpy as np

    return np.array([p.label for p in pairs])


def prior(train, heldout) -> dict:
    probs = class_prior(labels_of(train), len(heldout), 3)
    return {**metrics(probs, labels_of(heldout)), "probs": probs}


def length_features(pairs) -> "torch.Tensor":
    import torch

    rows = []
    for p in pairs:
        a, b = sum(map(len, p.response_a)), sum(map(len, p.response_b))
        d = (a - b) / max(1, a + b)
        rows.append([1.0, d, abs(d)])
    return torch.tensor(rows, dtype=torch.float64)


def longer(train, heldout, classes: int = 3) -> dict:
    """A logistic regression over `classes` classes on the answers' length difference (L2 1e-3), fitted by L-BFGS."""
    import torch

    x, y = length_features(train), torch.tensor(labels_of(train))
    weights = torch.zeros(3, classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(x @ weights, y) + 1e-3 * (weights[1:] ** 2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        probs = torch.softmax(length_features(heldout) @ weights, -1).numpy()
    return {**metrics(probs, labels_of(heldout)), "weights": weights.detach().tolist(), "probs": probs}


# ---- arms on the model


def score(argv: list[str], out: str) -> dict:
    """infer.py with these flags; its metrics.json."""
    parser = TrlParser((infer.InferArgs, infer.ScoreArgs))
    infer.main(*parser.parse_args_and_config([*argv, "--output_file", out, "--load_in_4bit", "false"]))
    return read_json(os.path.join(os.path.dirname(out), "metrics.json"), None)


def train(argv: list[str]) -> float:
    """train_unsloth.py with these flags; its wall seconds."""
    began = time.time()
    parser = TrlParser((DataArgs, ModelArgs, ScoreArgs, TrainConfig))
    train_unsloth.main(*parser.parse_args_and_config(argv))
    return time.time() - began


def class_head(model_dir: str, train_file: str, heldout_file: str, s: dict, seed: int, out: str) -> dict:
    """The classification-head baseline: LoRA (peft, the SFT arms' rank, alpha and modules) plus a trained 3-way
    score head on the last prompt token, the same rendered prompt (without the label), rows, steps, batch, learning
    rate and schedule as the SFT arms; float32."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_scheduler

    began = time.time()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(model, LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=0.0,
                                             target_modules=LORA_TARGETS, task_type="SEQ_CLS"))
    renderer = Renderer(tokenizer, read_template(DEFAULT_TEMPLATE), max_length=s["max_length"])
    train_pairs, heldout_pairs = read_pairs(train_file), read_pairs(heldout_file)
    seqs, labels = pair_sequences(renderer, train_pairs), labels_of(train_pairs)

    def batch(rows):  # right-padded: the head reads the last token that is not padding
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):
            ids[k, :len(row)], mask[k, :len(row)] = torch.tensor(row), 1
        return ids, mask

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s["learning_rate"],
                                  weight_decay=0.0)
    scheduler = get_scheduler(s["lr_scheduler_type"], optimizer, s["warmup_steps"], s["max_steps"])
    order, rng = [], random.Random(seed)
    model.train()
    for _ in range(s["max_steps"]):
        while len(order) < s["batch_size"]:
            order += rng.sample(range(len(seqs)), len(seqs))  # epochs in a seeded order
        chosen, order = order[:s["batch_size"]], order[s["batch_size"]:]
        ids, mask = batch([seqs[i] for i in chosen])
        loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor(labels[chosen])).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    train_seconds = time.time() - began
    model.eval()
    held = pair_sequences(renderer, heldout_pairs)
    probs = []
    with torch.no_grad():
        for start in range(0, len(held), 8):
            ids, mask = batch(held[start:start + 8])
            probs.append(torch.softmax(model(input_ids=ids, attention_mask=mask).logits.double(), -1).numpy())
    probs = np.concatenate(probs)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_predictions(out, heldout_pairs, probs)
    return {**metrics(probs, labels_of(heldout_pairs)), "train_seconds": train_seconds}


def run_arm(arm: str, seed: int, s: dict, folder: str, train_file: str, heldout_file: str) -> dict:
    """One arm x seed: its held-out metrics."""
    train_pairs, heldout_pairs = read_pairs(train_file), read_pairs(heldout_file)
    if arm in ("prior", "longer"):
        result = (prior if arm == "prior" else longer)(train_pairs, heldout_pairs)
        return {k: v for k, v in result.items() if k != "probs"}
    common = ["--data_file", heldout_file, "--max_length", str(s["max_length"])]
    if arm.startswith("zero-shot"):
        chat = "true" if arm == "zero-shot chat" else "false"
        return score(["--model", s["model"], "--chat_template", chat, *common],
                     os.path.join(folder, arm.replace(" ", "-"), "heldout.csv"))
    if arm == "class head":
        return class_head(s["model"], train_file, heldout_file, s, seed, predictions_file(folder, arm, seed))
    sft = "sft token" if arm == "tta" else arm
    run = os.path.join(folder, f"seed{seed}", sft.replace(" ", "-"))
    train_seconds = None
    if not os.path.exists(os.path.join(run, "adapter_model.safetensors")):
        train_seconds = train([
            "--model", s["model"], "--train_file", train_file, "--fold", "-1", "--output_dir", run, "--seed", str(seed),
            "--max_steps", str(s["max_steps"]), "--per_device_train_batch_size", str(s["batch_size"]),
            "--max_length", str(s["max_length"]), "--learning_rate", str(s["learning_rate"]),
            "--lr_scheduler_type", s["lr_scheduler_type"], "--warmup_steps", str(s["warmup_steps"]),
            "--lora_r", str(s["lora_r"]), "--lora_alpha", str(s["lora_alpha"]), "--load_in_4bit", "false",
            "--logging_steps", "5", "--save_strategy", "no", *SFT[sft]])
    tta = ["--tta"] if arm == "tta" else []
    result = score(["--adapter", run, *common, *tta], os.path.join(run, f"heldout{'-tta' * bool(tta)}.csv"))
    return {**result, "train_seconds": train_seconds}


# ---- the report


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(result: dict) -> str:
    def diff(a, reference):
        d = a.get(f"vs {reference}")
        return f"{d['mean']:+.4f} ({d['low']:+.4f} to {d['high']:+.4f})" if d else ""

    lines = ["| arm | held-out log loss: median (range) | accuracy: median (range) | seeds | log loss minus the "
             "prior's, same rows (95% interval) | minus sft token's |", "|---|---|---|---|---|---|"]
    for a in result["arms"]:
        ll, acc = a["log_loss"], a["accuracy"]
        lines.append(f"| {a['name']} | {ll['median']:.4f} ({ll['min']:.4f}-{ll['max']:.4f}) | {acc['median']:.3f} "
                     f"({acc['min']:.3f}-{acc['max']:.3f}) | {len(a['per_seed'])} | {diff(a, 'prior')} | "
                     f"{diff(a, 'sft token')} |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = result["arms"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "log_loss", "held-out log loss"), (axes[1], "accuracy", "held-out accuracy")):
        for x, a in enumerate(arms):
            ax.plot([x] * len(a["per_seed"]), [r[key] for r in a["per_seed"]], "o", color="tab:blue", alpha=0.7,
                    label="one seed" if x == 0 else None)
            ax.plot([x - 0.3, x + 0.3], [a[key]["median"]] * 2, "-", color="black",
                    label="median" if x == 0 else None)
        prior_value = next(a[key]["median"] for a in arms if a["name"] == "prior")
        ax.axhline(prior_value, color="tab:red", lw=0.8, ls="--", label="class prior")
        ax.set_xticks(range(len(arms)), [a["name"] for a in arms], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    s = result["settings"]
    fig.suptitle(f"LLMEval^2 ({s['train_rows']} training, {s['heldout_rows']} held-out rows, <= {s['max_length']} "
                 f"tokens), SmolLM2-135M-Instruct float32, {s['max_steps']} steps of {s['batch_size']}, "
                 f"lr {s['learning_rate']}, CPU", fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=REAL_DATA)
    parser.add_argument("--model", default=REAL_MODEL)
    parser.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--train_rows", type=int, default=160)
    parser.add_argument("--heldout_rows", type=int, default=80)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--max_steps", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_scheduler_type", default="cosine")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--lora_alpha", type=int, default=32)
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "real-model-bench"),
                        help="data, run folders and the per-run results (kept; a rerun reuses them)")
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "real_model_cpu.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "real_model_cpu.png"))
    args = parser.parse_args()
    check_real_inputs("real-model benchmark", args.data, args.model)
    os.chdir(ROOT)  # the prompts are named relative to the project
    settings = {key: getattr(args, key) for key in ("model", "train_rows", "heldout_rows", "max_length", "max_steps",
                                                     "batch_size", "learning_rate", "lr_scheduler_type",
                                                     "warmup_steps", "lora_r", "lora_alpha")}
    with open(args.data, "rb") as f:
        settings["data_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    folder = os.path.join(args.runs, hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12])
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "settings.json"), settings)
    store = os.path.join(folder, "results.json")
    start = time.time()
    if not os.path.exists(os.path.join(folder, "heldout.csv")):
        ids = fitting_rows(args.data, args.model, args.max_length)
        write_split(args.data, ids, args.train_rows, args.heldout_rows, folder)
    train_file, heldout_file = os.path.join(folder, "train.csv"), os.path.join(folder, "heldout.csv")
    for seed in args.seeds:
        for arm in args.arms:
            key = arm if arm in DETERMINISTIC else f"{arm}/seed{seed}"
            done = read_json(store, {})
            if key in done:
                continue
            began = time.time()
            result = {**run_arm(arm, seed, settings, folder, train_file, heldout_file), "seed": seed,
                      "seconds": time.time() - began}
            done = read_json(store, {})
            done[key] = result
            write_json(store, done)
            print(f"real-model benchmark: {key}: log loss {result['log_loss']:.4f}, accuracy {result['accuracy']:.3f}"
                  f" ({result['seconds']:.0f} s)", flush=True)
    done = read_json(store, {})
    heldout = labels_of(read_pairs(heldout_file))
    result = {
        "settings": settings, "seeds": args.seeds, "heldout_labels": dict(zip(CLASS_NAMES, map(int, (
            (heldout == k).sum() for k in range(3))))),
        "arms": [], "wall_seconds_this_call": time.time() - start, "command": "python " + " ".join(sys.argv),
        "runs_folder": os.path.relpath(folder, ROOT),
    }
    heldout_pairs, train_pairs = read_pairs(heldout_file), read_pairs(train_file)
    losses = {}  # arm: per-row log loss, averaged over seeds
    for arm in args.arms:
        runs = [done[arm]] if arm in DETERMINISTIC else [done[f"{arm}/seed{s}"] for s in args.seeds]
        if arm in ("prior", "longer"):
            probs = (prior if arm == "prior" else longer)(train_pairs, heldout_pairs)["probs"]
            losses[arm] = -np.log(probs[np.arange(len(heldout)), heldout])
        else:
            seeds = [None] if arm in DETERMINISTIC else args.seeds
            files = [predictions_file(folder, arm, s) for s in seeds]
            if all(os.path.exists(f) for f in files):
                losses[arm] = np.mean([row_losses(f, heldout_pairs) for f in files], axis=0)
        result["arms"].append({"name": arm, "per_seed": runs,
                               **{k: summary([r[k] for r in runs]) for k in ("log_loss", "accuracy")}})
    for a in result["arms"]:
        for reference in ("prior", "sft token"):
            if a["name"] in losses and reference in losses and a["name"] != reference:
                a[f"vs {reference}"] = paired(losses[a["name"]], losses[reference])
    write_json(args.results, result)
    plot(result, args.plot)
    print(table(result))
    print(f"wrote {args.results} and {args.plot}")


if __name__ == "__main__":
    try:
        main()
    except Missing as e:
        sys.exit(f"real-model benchmark: {e}")
