"""CV, calibration, priors for degenerate battles and ensembles on the demo data, over several seeds: the table in
docs/BENCHMARKS.md, "Calibration, priors and ensembles (demo, CPU)".

    python bench/calibration_demo.py                  # seeds 0 1 2: a 5-fold CV each, then the evaluation set
    python bench/calibration_demo.py --seeds 0 --n_folds 2 --max_steps 10 --eval_rows 100 --out runs/cv-smoke  # smoke

For each seed: `train_unsloth.py --config configs/demo.yaml --fold all --degenerate_priors --seed S` into
OUT/seed-S/ (the fold split, the LoRA init and the data order change with the seed), then `infer.py` on a
labelled demo set generated apart from the training data (`make_demo_data.py --seed 1000`): the fold-0 model alone,
and the fold models together, combined by `prob` and by `logprob`, with their calibration (the default) and
without (`--no_calibration`). Each step is the command a user runs; the figures are read from the metrics.json
files they write.

The demo data says each battle's true probabilities (truth.csv beside it), so train_unsloth.py and infer.py report
the best log loss possible on the rows they score (`bayes_limit` in their metrics.json): the table's "Bayes limit"
rows.
"""

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import ROOT, read_json  # noqa: E402
from arena.io import write_json  # noqa: E402


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def one_seed(seed: int, args: argparse.Namespace, eval_file: str) -> dict:
    out = os.path.join(args.out, f"seed-{seed}")
    run("train_unsloth.py", "--config", "configs/demo.yaml", "--model", args.model, "--train_file", args.train_file,
        "--fold", "all", "--n_folds", str(args.n_folds), "--max_steps", str(args.max_steps), "--seed", str(seed),
        "--degenerate_priors", "--output_dir", out)
    cv = read_json(os.path.join(out, "metrics.json"), None)  # run() checked the command
    record = {
        "seed": seed,
        "cv_log_loss": cv["log_loss"],
        "cv_accuracy": cv["accuracy"],
        "bayes_cv": cv["bayes_limit"],
        "cv_calibrated": cv["calibration"]["log_loss_after"],
        "cv_priors": cv["priors"]["log_loss_after"],
        "identical_rows": cv["priors"]["identical"]["heldout_rows"],
        "identical_before": cv["priors"]["identical"]["log_loss_before"],
        "identical_after": cv["priors"]["identical"]["log_loss_after"],
        "temperatures": [fold["temperature"] for fold in cv["folds"]],
        "fold_log_loss": [fold["log_loss"] for fold in cv["folds"]],
    }
    scored = {
        "fold0": [os.path.join(out, "fold-0")],
        "prob": [out, "--combine", "prob"],
        "logprob": [out, "--combine", "logprob"],
        "prob_raw": [out, "--combine", "prob", "--no_calibration"],
        "logprob_raw": [out, "--combine", "logprob", "--no_calibration"],
    }
    for name, adapter_args in scored.items():
        pred = os.path.join(out, f"eval-{name}", "predictions.csv")
        run("infer.py", "--adapter", *adapter_args, "--data_file", eval_file, "--output_file", pred)
        metrics = read_json(os.path.join(os.path.dirname(pred), "metrics.json"), None)
        record[f"eval_{name}"] = metrics["log_loss"]
        record["bayes_eval"] = metrics["bayes_limit"]
        if "members" in metrics and name == "prob":
            record["eval_members"] = [m["log_loss"] for m in metrics["members"]]
    return record


ROWS = [
    ("CV log loss, raw (all labelled rows, out of fold)", "cv_log_loss"),
    ("CV after the temperature (cross-fitted)", "cv_calibrated"),
    ("CV after the temperature and priors (cross-fitted)", "cv_priors"),
    ("identical rows: after the temperature", "identical_before"),
    ("identical rows: after the priors too", "identical_after"),
    ("Bayes limit on the CV rows", "bayes_cv"),
    ("evaluation set: fold-0 model alone, calibrated", "eval_fold0"),
    ("evaluation set: mean of the fold models' own log losses, calibrated", "eval_members_mean"),
    ("evaluation set: fold models combined by prob, calibrated", "eval_prob"),
    ("evaluation set: fold models combined by logprob, calibrated", "eval_logprob"),
    ("evaluation set: combined by prob, raw", "eval_prob_raw"),
    ("evaluation set: combined by logprob, raw", "eval_logprob_raw"),
    ("Bayes limit on the evaluation set", "bayes_eval"),
]


def table(records: list[dict]) -> str:
    seeds = [r["seed"] for r in records]
    lines = ["| figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for label, key in ROWS:
        values = [r[key] for r in records]
        shown = [f"{v:.4f}" if v is not None else "-" for v in values]
        known = [v for v in values if v is not None]
        mean = f"{statistics.mean(known):.4f}" if known else "-"
        lines.append(f"| {label} | " + " | ".join(shown) + f" | {mean} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n_folds", type=int, default=5)
    parser.add_argument("--max_steps", type=int, default=400)
    parser.add_argument("--model", default="runs/demo-model", help="made by `make demo`")
    parser.add_argument("--train_file", default="data/demo/train.csv", help="made by `make demo`")
    parser.add_argument("--eval_rows", type=int, default=1000)
    parser.add_argument("--out", default="runs/bench-cv")
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "calibration_demo_cpu.json"))
    args = parser.parse_args()

    eval_dir = os.path.join(args.out, "eval-data")
    run("data/make_demo_data.py", "--out", eval_dir, "--rows", str(args.eval_rows), "--test_rows", "1",
        "--seed", "1000")
    eval_file = os.path.join(eval_dir, "train.csv")
    records = []
    for seed in args.seeds:
        record = one_seed(seed, args, eval_file)
        record["eval_members_mean"] = statistics.mean(record["eval_members"])
        records.append(record)
        print(table(records), flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "results"}
    write_json(args.results, {"settings": settings, "records": records, "table": table(records)})
    print(f"results: {args.results}")


if __name__ == "__main__":
    main()
