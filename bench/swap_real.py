"""Swap augmentation on the real model, as a user runs it: `make demo-real`'s recipe (configs/demo-real.yaml, 40 steps
of 4, float32) with and without --swap_augment, at equal steps and so equal distinct battles seen (the sampler trains
each battle on one random side), then infer.py on data/llmeval2/test.csv: held-out log loss, accuracy and mean
P(tie), per seed. Extra flags after `--` go to both arms (`-- --max_grad_norm 1e9`).

    python bench/swap_real.py --seeds 0 1 2                  # bench/results/swap_real_cpu.json

Each finished run is stored at once and skipped on a rerun with the same settings.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.real_model import score, train  # noqa: E402  (imports unsloth first)

from arena.predictions import read_predictions  # noqa: E402
from bench.common import REAL_MODEL, ROOT, read_json, update_json  # noqa: E402

ARMS = {"label loss": [], "label loss + swap": ["--swap_augment"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "swap-real"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "swap_real_cpu.json"))
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if not os.path.exists(os.path.join(REAL_MODEL, "config.json")):
        sys.exit(f"swap benchmark: no model in {REAL_MODEL}; build it with `make real-model`")
    os.chdir(ROOT)
    for seed in args.seeds:
        for arm in args.arms:
            flags = ARMS[arm]
            key = f"{arm}/seed{seed}" + (" " + " ".join(extra) if extra else "")
            if key in read_json(args.out, {}).get("runs", {}):
                continue
            run = os.path.join(args.runs, key.replace(" ", "_").replace("/", "-"))
            seconds = train(["--config", "configs/demo-real.yaml", "--model", REAL_MODEL, "--output_dir", run,
                             "--seed", str(seed), *flags, *extra])
            out = os.path.join(run, "test", "submission.csv")
            result = score(["--adapter", run, "--data_file", "data/llmeval2/test.csv"], out)
            probs = np.array(list(read_predictions(out).by_id().values()))
            record = {"log_loss": result["log_loss"], "accuracy": result["accuracy"],
                      "mean_p_tie": float(probs[:, 2].mean()), "train_seconds": seconds}
            update_json(args.out, lambda d: d.setdefault("runs", {}).__setitem__(key, record), {})
            print(f"swap benchmark: {key}: log loss {record['log_loss']:.4f}, accuracy {record['accuracy']:.3f}, "
                  f"mean P(tie) {record['mean_p_tie']:.3f}", flush=True)


if __name__ == "__main__":
    main()
