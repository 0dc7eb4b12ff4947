"""Held-out log loss and accuracy of several scored runs, beside the class prior of the training rows: one table.

    python tools/compare.py --train data/llmeval2/train.csv --test data/llmeval2/test.csv \
        zero-shot=runs/demo-real-zero-shot fine-tuned=runs/demo-real-test

Each NAME=FOLDER is a folder where infer.py wrote its predictions of --test (its metrics.json). The prior row
predicts every held-out row with the training rows' class frequencies (add-one).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arena.data import CLASS_NAMES, read_pairs  # noqa: E402
from arena.run_folder import METRICS, path, read_metrics  # noqa: E402
from arena.scoring import class_prior, metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="the training rows (their class frequencies: the prior)")
    parser.add_argument("--test", required=True, help="the held-out rows the runs scored")
    parser.add_argument("runs", nargs="+", metavar="NAME=FOLDER")
    args = parser.parse_args()
    train = np.array([p.label for p in read_pairs(args.train)])
    test = np.array([p.label for p in read_pairs(args.test)])
    k = max(train.max(), test.max()) + 1
    rows = [("class prior", metrics(class_prior(train, len(test), k), test))]
    for item in args.runs:
        name, _, folder = item.partition("=")
        m = read_metrics(folder)
        if m is None:
            sys.exit(f"compare: no {path(folder, METRICS)} (score {args.test} into {folder} with infer.py first)")
        if m.get("n") != len(test):
            sys.exit(f"compare: {path(folder, METRICS)} scored {m.get('n')} rows, {args.test} has {len(test)}")
        rows.append((name, m))
    freq = ", ".join(f"{c} {n / len(test):.2f}" for c, n in zip(CLASS_NAMES, np.bincount(test, minlength=k)))
    print(f"{len(test)} held-out rows ({freq}); {len(train)} training rows")
    print(f"{'':<18}{'log loss':>10}{'accuracy':>10}")
    for name, m in rows:
        print(f"{name:<18}{m['log_loss']:>10.4f}{m['accuracy']:>10.3f}")


if __name__ == "__main__":
    main()
