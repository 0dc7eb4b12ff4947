"""The generation head against the classification head, in one trainer, over data sizes: learning curves on real
battles (held-out log loss and accuracy at several sizes of rows seen) for the arms

    token loss   the seed recipe: the LM head's label rows, cross-entropy over the whole vocabulary (--loss token)
    label loss   the same rows, cross-entropy over the label logits only (--loss label)
    label rows   the label rows as a head of their own, untied, with a start bias (--label_head rows --loss label)
    class head   a fresh classification head on the same hidden state, same start bias (--label_head fresh)
    scaled rows  the label rows' head started as a calibration: rows times a scale, scale and bias fitted to 64
                 training rows (--label_head scaled --loss label)

plus the class prior and "the longer answer wins" (a logistic regression on the answers' length difference), on

    llmeval2     the shipped split data/llmeval2/ (three-way, ties): 400 training rows, 200 held out
    hh-helpful   ../shared/data/hh-helpful-base-test.jsonl.gz (two-way, --labels " A" " B"): rows that fit

    python tools/real_model.py                                        # the model (`make real-model`)
    OMP_NUM_THREADS=2 nohup python bench/heads.py > runs/heads.log 2>&1 &
    python bench/heads.py --datasets llmeval2 --seeds 0 --sizes 16 32 --validation_rows 16 --heldout_rows 24   # smoke

Every arm trains through train_unsloth.py (ArenaTrainer: one optimizer, clipping, checkpointing, precision, data
order and prompt) with a constant learning rate after --warmup_steps, saving a checkpoint at each size, so that the
model at a size is exactly a run of that many steps. `--schedule cosine` decays the rate to zero instead, as
`make demo-real` does: each size is then a run of its own (a checkpoint part-way down a cosine is not a shorter
run); give it its own --results. Each model is scored by infer.py on the validation rows (carved from the
training rows by a seeded draw, never trained on) and on the held-out rows. Learning rates: every
arm runs each of --learning_rates on the first seed; the one with the lowest validation log loss (mean over the
sizes) is the arm's, and the other seeds run with it alone. The held-out rows never choose anything.
Paired per-row differences (arm minus reference, same held-out rows, averaged over seeds) of log loss and of accuracy
(each row's hit, 1 or 0, averaged over seeds), with 95% bootstrap intervals over rows. Every finished run is stored
in --results at once (per-row probabilities included), so a rerun or a later session resumes where it stopped; run
folders live in --runs and may be deleted.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.real_model import labels_of, longer, paired, score, train  # noqa: E402  (imports unsloth first)

from arena.config import DEFAULT_TEMPLATE  # noqa: E402
from arena.data import BadRows, read_pairs  # noqa: E402
from arena.io import atomic_open, write_json  # noqa: E402
from arena.predictions import read_predictions  # noqa: E402
from arena.prompts import Renderer, read_template  # noqa: E402
from arena.scoring import class_prior, metrics, pair_sequences  # noqa: E402
from bench.common import REAL_MODEL, ROOT, read_json  # noqa: E402

ARMS = {
    "token loss": ["--loss", "token"],
    "label loss": ["--loss", "label"],
    "label rows": ["--loss", "label", "--label_head", "rows"],
    "class head": ["--loss", "label", "--label_head", "fresh"],
    "scaled rows": ["--loss", "label", "--label_head", "scaled"],
}
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
DATASETS = {
    "llmeval2": {"train": os.path.join(ROOT, "data", "llmeval2", "train.csv"),
                 "heldout": os.path.join(ROOT, "data", "llmeval2", "test.csv"), "labels": [" A", " B", " Tie"]},
    "hh-helpful": {"source": os.path.join(SHARED, "hh-helpful-base-test.jsonl.gz"), "labels": [" A", " B"]},
}


class Missing(Exception):
    """Something the benchmark needs is absent: one line."""


# ---- data: training, validation and held-out files per dataset


def fits(pairs, tokenizer, labels, max_length: int) -> list[bool]:
    renderer = Renderer(tokenizer, read_template(os.path.join(ROOT, DEFAULT_TEMPLATE)), labels, max_length=10**6)
    return [len(ids) + 1 <= max_length for ids in pair_sequences(renderer, pairs)]


def csv_subset(source: str, ids: set[str], out: str) -> None:
    with open(source, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["id"] in ids]
    with atomic_open(out) as f:
        writer = csv.DictWriter(f, reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def prepare(name: str, spec: dict, args, folder: str) -> dict[str, str]:
    """train.csv/.jsonl (training), validation and heldout files of one dataset in `folder`; their paths."""
    from transformers import AutoTokenizer

    os.makedirs(folder, exist_ok=True)
    ext = ".csv" if "train" in spec else ".jsonl"
    files = {part: os.path.join(folder, part + ext) for part in ("train", "validation", "heldout")}
    if all(os.path.exists(f) for f in files.values()):
        return files
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if "train" in spec:  # the shipped split: validation carved from its training rows
        pairs = read_pairs(spec["train"])
        ids = [p.id for p in pairs]
        validation = set(random.Random(0).sample(ids, args.validation_rows))
        csv_subset(spec["train"], set(ids) - validation, files["train"])
        csv_subset(spec["train"], validation, files["validation"])
        heldout = [p.id for p in read_pairs(spec["heldout"])]
        chosen = random.Random(0).sample(heldout, min(args.heldout_rows, len(heldout)))
        csv_subset(spec["heldout"], set(chosen), files["heldout"])
        return files
    if not os.path.exists(spec["source"]):
        raise Missing(f"{spec['source']} not found (HH-RLHF lives in ../shared/data, beside this checkout)")
    with gzip.open(spec["source"], "rt", encoding="utf-8") as f:
        rows = [dict(json.loads(line), id=f"hh-{i}") for i, line in enumerate(f)]
    plain = os.path.join(folder, "all.jsonl")
    with atomic_open(plain) as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    pairs = read_pairs(plain, on_bad_row="skip", bad_rows=BadRows())  # HH has a few rows without an answer
    fitting = {p.id for p, ok in zip(pairs, fits(pairs, tokenizer, spec["labels"], args.max_length)) if ok}
    keep = [r for r in rows if r["id"] in fitting]
    need = args.train_rows + args.validation_rows + args.heldout_rows
    if len(keep) < need:
        raise Missing(f"{name}: only {len(keep)} rows fit {args.max_length} tokens; {need} needed")
    chosen = random.Random(0).sample(keep, need)
    cuts = {"train": chosen[:args.train_rows], "validation": chosen[args.train_rows:-args.heldout_rows],
            "heldout": chosen[-args.heldout_rows:]}
    for part, part_rows in cuts.items():
        with atomic_open(files[part]) as f:
            f.writelines(json.dumps(r) + "\n" for r in part_rows)
    os.remove(plain)
    return files


# ---- one run: an arm at one learning rate and seed, scored at every size


def run_key(dataset: str, arm: str, lr: float, seed: int) -> str:
    return f"{dataset}/{arm}/lr{lr:g}/seed{seed}"


def run_once(dataset: str, arm: str, lr: float, seed: int, files: dict, labels: list[str], args) -> dict:
    """Trains the arm for the largest size, a checkpoint at each size; scores every checkpoint on the validation and
    held-out rows. Returns {"sizes": {rows_seen: {split: {metrics, "probs": [[...]]}}}, "train_seconds"}."""
    run = os.path.join(args.runs, run_key(dataset, arm, lr, seed).replace(" ", "-"))
    steps = [size // args.batch_size for size in args.sizes]
    if args.schedule == "constant":  # one run, a checkpoint at each size
        trainings = [(run, steps[-1], steps[0], "constant_with_warmup")]
        bases = [run] * len(steps)
    else:  # a run of its own for each size
        run += "-cosine"
        bases = [os.path.join(run, f"steps{step}") for step in steps]
        trainings = [(base, step, step, "cosine") for base, step in zip(bases, steps)]
    began = time.time()
    label_flags = ["--labels", *labels]
    for folder, max_steps, save_steps, scheduler in trainings:
        if os.path.exists(os.path.join(folder, "adapter_model.safetensors")):
            continue
        train(["--model", args.model, "--train_file", files["train"], "--fold", "-1", "--output_dir", folder,
               "--seed", str(seed), "--max_steps", str(max_steps), "--per_device_train_batch_size",
               str(args.batch_size), "--max_length", str(args.max_length), "--learning_rate", str(lr),
               "--lr_scheduler_type", scheduler, "--warmup_steps", str(args.warmup_steps),
               "--lora_r", "16", "--lora_alpha", "32", "--load_in_4bit", "false", "--dtype", args.dtype,
               "--use_gradient_checkpointing", args.gradient_checkpointing, "--logging_steps", "10",
               "--save_strategy", "steps", "--save_steps", str(save_steps), "--save_total_limit", "100",
               "--save_only_model", *label_flags, *ARMS[arm]])
    train_seconds = time.time() - began
    out = {"sizes": {}, "train_seconds": train_seconds}
    for size, step, base in zip(args.sizes, steps, bases):
        folder = os.path.join(base, f"checkpoint-{step}")
        out["sizes"][str(size)] = {}
        for split in ("validation", "heldout"):
            predictions = os.path.join(run, f"{split}-{size}.csv")
            result = score(["--adapter", folder, "--data_file", files[split], "--max_length", str(args.max_length),
                            "--dtype", args.dtype, "--no_calibration", *label_flags], predictions)
            probs = read_predictions(predictions).by_id()
            ids = [p.id for p in read_pairs(files[split])]
            out["sizes"][str(size)][split] = {"log_loss": result["log_loss"], "accuracy": result["accuracy"],
                                              "probs": [list(probs[i]) for i in ids]}
    out["seconds"] = time.time() - began
    return out


# ---- the plan: learning rates on the first seed, then the chosen one on the others


def chosen_lr(store: dict, dataset: str, arm: str, args) -> float | None:
    """The learning rate with the lowest validation log loss on the first seed (mean over the sizes); None until
    every candidate has run."""
    runs = [store.get(run_key(dataset, arm, lr, args.seeds[0])) for lr in args.learning_rates]
    if any(r is None for r in runs):
        return None
    losses = [statistics.mean(r["sizes"][str(s)]["validation"]["log_loss"] for s in args.sizes) for r in runs]
    return args.learning_rates[int(np.argmin(losses))]


def plan(store: dict, datasets: list[str], args):
    """(dataset, arm, lr, seed) in order: each dataset's learning-rate search on the first seed, then its other
    seeds (lr None: the chosen one, known by then)."""
    for dataset in datasets:
        for lr in args.learning_rates:  # every arm at the first rate first: a useful table if stopped half-way
            for arm in args.arms:
                yield dataset, arm, lr, args.seeds[0]
        for seed in args.seeds[1:]:
            for arm in args.arms:
                yield dataset, arm, None, seed


# ---- the report


def references(train_pairs, heldout_pairs, classes: int) -> dict[str, np.ndarray]:
    """Per-row probabilities of the arms without a model: the class prior and the longer answer."""
    prior = class_prior(labels_of(train_pairs), len(heldout_pairs), classes)
    return {"prior": prior, "longer": longer(train_pairs, heldout_pairs, classes)["probs"]}


def row_losses(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1))


def row_hits(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the most probable class is the label, else 0.0."""
    return (probs.argmax(1) == labels).astype(float)


def report(store: dict, datasets: list[str], files_of: dict, args) -> dict:
    runs, pairs_out, selected = [], [], {}
    search = [{"dataset": key.split("/")[0], "arm": key.split("/")[1],
               "learning_rate": float(key.split("/lr")[1].split("/")[0]), "seed": int(key.rsplit("seed", 1)[1]),
               "rows_seen": int(size),
               **{f"{split}_log_loss": result["sizes"][size][split]["log_loss"] for split in ("validation", "heldout")}}
              for key, result in sorted(store.items()) for size in result["sizes"]]
    for dataset in datasets:
        files = files_of[dataset]
        train_pairs, heldout_pairs = read_pairs(files["train"]), read_pairs(files["heldout"])
        labels = labels_of(heldout_pairs)
        classes = len(DATASETS[dataset]["labels"])
        fixed = references(train_pairs, heldout_pairs, classes)
        for size in args.sizes:
            losses, hits = {}, {}  # arm: per-row loss, and per-row hit (1 if the argmax is right), averaged over seeds
            for name, probs in fixed.items():
                runs.append({"dataset": dataset, "arm": name, "rows_seen": size, "seed": None,
                             "log_loss": float(row_losses(probs, labels).mean()),
                             "accuracy": float(row_hits(probs, labels).mean())})
                losses[name], hits[name] = row_losses(probs, labels), row_hits(probs, labels)
            for arm in args.arms:
                lr = chosen_lr(store, dataset, arm, args)
                if lr is None:
                    continue
                selected[f"{dataset}/{arm}"] = lr
                per_seed, per_seed_hits = [], []
                for seed in args.seeds:
                    result = store.get(run_key(dataset, arm, lr, seed))
                    if result is None:
                        continue
                    held = result["sizes"][str(size)]["heldout"]
                    probs = np.array(held["probs"])
                    runs.append({"dataset": dataset, "arm": arm, "rows_seen": size, "seed": seed,
                                 "learning_rate": lr, "log_loss": held["log_loss"], "accuracy": held["accuracy"],
                                 "validation_log_loss": result["sizes"][str(size)]["validation"]["log_loss"],
                                 "mean_p_tie": float(probs[:, 2].mean()) if classes == 3 else None})
                    per_seed.append(row_losses(probs, labels))
                    per_seed_hits.append(row_hits(probs, labels))
                if per_seed:
                    losses[arm], hits[arm] = np.mean(per_seed, axis=0), np.mean(per_seed_hits, axis=0)
            for arm in args.arms:
                for reference in ("prior", "longer", "class head", "label loss", "label rows"):
                    if arm in losses and reference in losses and arm != reference:
                        accuracy = paired(hits[arm], hits[reference])
                        pairs_out.append({"dataset": dataset, "rows_seen": size, "arm": arm, "reference": reference,
                                          **paired(losses[arm], losses[reference]),
                                          **{f"accuracy_{k}": v for k, v in accuracy.items()}})
    return {"runs": runs, "paired": pairs_out, "learning_rates": selected, "search": search}


def table(result: dict, args) -> str:
    lines = ["| dataset | rows seen | arm | lr | held-out log loss: median (range) | accuracy: median (range) | "
             "seeds | "
             "minus prior (95% interval) | minus class head (95% interval) | accuracy minus longer (95% interval) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    diff = {(p["dataset"], p["rows_seen"], p["arm"], p["reference"]): p for p in result["paired"]}

    def cell(key, what=""):
        d = diff.get(key)
        return f"{d[what + 'mean']:+.3f} ({d[what + 'low']:+.3f} to {d[what + 'high']:+.3f})" if d else ""

    groups = {}
    for r in result["runs"]:
        groups.setdefault((r["dataset"], r["rows_seen"], r["arm"]), []).append(r)
    for (dataset, size, arm), rs in groups.items():
        ll, acc = [r["log_loss"] for r in rs], [r["accuracy"] for r in rs]
        lr = rs[0].get("learning_rate")
        lines.append(f"| {dataset} | {size} | {arm} | {'' if lr is None else f'{lr:g}'} | {statistics.median(ll):.4f} "
                     f"({min(ll):.4f}-{max(ll):.4f}) | {statistics.median(acc):.3f} ({min(acc):.3f}-{max(acc):.3f}) | "
                     f"{sum(r['seed'] is not None for r in rs) or '-'} | {cell((dataset, size, arm, 'prior'))} | "
                     f"{cell((dataset, size, arm, 'class head'))} | "
                     f"{cell((dataset, size, arm, 'longer'), 'accuracy_')} |")
    lines += ["", "| dataset | arm | lr | seed | rows seen | validation log loss | held-out log loss |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['arm']} | {r['learning_rate']:g} | {r['seed']} | {r['rows_seen']} | "
              f"{r['validation_log_loss']:.4f} | {r['heldout_log_loss']:.4f} |" for r in result["search"]]
    return "\n".join(lines)


def plot(result: dict, path: str, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in result["runs"]})
    colours = {name: f"C{i}" for i, name in enumerate(("prior", "longer", *ARMS))}  # one colour an arm throughout
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.6 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        for col, key in enumerate(("log_loss", "accuracy")):
            ax = axes[row][col]
            arms = {}
            for r in result["runs"]:
                if r["dataset"] == dataset:
                    arms.setdefault(r["arm"], {}).setdefault(r["rows_seen"], []).append(r[key])
            for arm, by_size in arms.items():
                sizes = sorted(by_size)
                medians = [statistics.median(by_size[s]) for s in sizes]
                style = "--" if arm in ("prior", "longer") else "-o"
                seeds = max(map(len, by_size.values()))
                name = arm if style == "--" else f"{arm} ({seeds} seed{'s' * (seeds > 1)})"
                ax.plot(sizes, medians, style, label=name, color=colours[arm])
                for s in sizes:
                    if len(by_size[s]) > 1:
                        ax.plot([s, s], [min(by_size[s]), max(by_size[s])], "-", alpha=0.4, color=colours[arm])
            ax.set_xscale("log", base=2)
            ax.set_xticks(args.sizes, [str(s) for s in args.sizes])
            ax.set_xlabel("training rows seen")
            ax.set_ylabel(f"held-out {key.replace('_', ' ')}")
            ax.set_title(dataset, fontsize=9)
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    seeds = sorted({r["seed"] for r in result["runs"] if r["seed"] is not None})
    fig.suptitle(f"SmolLM2-135M-Instruct, LoRA r16, batch {args.batch_size}, {args.schedule} rate, {args.dtype}, CPU: "
                 f"median and range over the seeds run, of {seeds}", fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=REAL_MODEL)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sizes", nargs="+", type=int, default=[160, 640], help="training rows seen (ascending)")
    parser.add_argument("--learning_rates", nargs="+", type=float, default=[3e-4, 1e-3])
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                        help="the learning rate after warm-up: constant (one run, a checkpoint per size) or decaying "
                             "to zero (a run per size)")
    parser.add_argument("--max_length", type=int, default=320)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--gradient_checkpointing", default="unsloth")
    parser.add_argument("--train_rows", type=int, default=640, help="hh-helpful: distinct training rows")
    parser.add_argument("--validation_rows", type=int, default=80)
    parser.add_argument("--heldout_rows", type=int, default=200, help="held-out rows (llmeval2: a draw of test.csv)")
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "heads-bench"))
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "heads_cpu.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "heads_cpu.png"))
    parser.add_argument("--report_only", action="store_true", help="write the report from the stored runs")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.model, "config.json")):
        raise Missing(f"no model in {args.model}; build it with `make real-model`")
    os.chdir(ROOT)  # the prompts are named relative to the project
    settings = {k: getattr(args, k) for k in ("sizes", "learning_rates", "batch_size", "warmup_steps", "schedule",
                                              "max_length", "dtype", "gradient_checkpointing", "train_rows",
                                              "validation_rows", "heldout_rows")}
    saved = read_json(args.results, {})
    if saved.get("settings", settings) != settings:
        raise Missing(f"{args.results} holds runs of other settings ({saved['settings']}); give another --results")
    store = saved.get("store", {})
    files_of = {d: prepare(d, DATASETS[d], args, os.path.join(args.runs, "data", d)) for d in args.datasets}

    def save(extra=None):
        write_json(args.results, {"settings": settings, "command": "python " + " ".join(sys.argv), "store": store,
                                  **(extra or {})})

    for dataset, arm, lr, seed in ([] if args.report_only else plan(store, args.datasets, args)):
        lr = lr if lr is not None else chosen_lr(store, dataset, arm, args)
        key = run_key(dataset, arm, lr, seed)
        if key in store:
            continue
        store[key] = run_once(dataset, arm, lr, seed, files_of[dataset], DATASETS[dataset]["labels"], args)
        save()
        print(f"heads benchmark: {key}: " + "; ".join(
            f"{s} rows: validation {v['validation']['log_loss']:.4f}, held-out {v['heldout']['log_loss']:.4f} / "
            f"{v['heldout']['accuracy']:.3f}" for s, v in store[key]["sizes"].items())
            + f" ({store[key]['seconds']:.0f} s)", flush=True)
    result = report(store, args.datasets, files_of, args)
    save(result)
    if result["runs"]:
        plot(result, args.plot, args)
    print(table(result, args))
    print(f"wrote {args.results} and {args.plot}")


if __name__ == "__main__":
    try:
        main()
    except Missing as e:
        sys.exit(f"heads benchmark: {e}")
