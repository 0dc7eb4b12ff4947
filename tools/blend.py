"""Blends prediction files (submissions, oof.csv) row by row, matched by id, with weights fitted on out-of-fold
predictions.

    # fit the weights on two runs' oof.csv (the same labelled rows), then blend their submissions with them
    python tools/blend.py --oof runs/a/oof.csv runs/b/oof.csv \\
        --predictions a/submission.csv b/submission.csv --output_file blend.csv
    # given weights, no fitting
    python tools/blend.py --predictions a/submission.csv b/submission.csv --weights 0.7 0.3 --output_file blend.csv

--method logprob (default) takes the weighted mean of the log-probabilities (renormalised), prob that of the
probabilities (arena/ensemble.py). Give the --oof files in the same order as the --predictions files. The output
is a submission (`id,winner_model_a,winner_model_b,winner_tie`) in the first file's row order, written atomically.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from arena.errors import DataError  # noqa: E402
from arena.ensemble import DEFAULT_METHOD, METHODS, aligned, combine, fit_weights  # noqa: E402
from arena.predictions import read_predictions, write_predictions  # noqa: E402
from arena.scoring import log_loss  # noqa: E402


def main(args: argparse.Namespace) -> None:
    if not args.oof and not args.predictions:
        raise DataError("nothing to blend: give --oof files (to fit weights) and/or --predictions files")
    weights = args.weights
    if args.oof:
        reads = [read_predictions(path) for path in args.oof]
        labels = reads[0].labels()
        if labels is None:
            raise DataError(f"{args.oof[0]}: no label column; --oof takes out-of-fold predictions (oof.csv)")
        probs = aligned(reads)  # in the first file's row order, as its labels
        if weights is None:
            weights = fit_weights(probs, labels, args.method).tolist()
        for path, p in zip(args.oof, probs):
            print(f"{path}: log loss {log_loss(p, labels):.4f}")
        blended = combine(probs, weights, args.method)
        print(f"blend ({args.method}, weights {', '.join(f'{w:.3f}' for w in weights)}): "
              f"log loss {log_loss(blended, labels):.4f} on {len(labels)} out-of-fold rows")
    if not args.predictions:
        return
    if args.oof and len(args.oof) != len(args.predictions):
        raise DataError(f"{len(args.oof)} --oof files for {len(args.predictions)} --predictions files; give one each")
    if not args.output_file:
        raise DataError("give --output_file for the blended predictions")
    reads = [read_predictions(path) for path in args.predictions]
    write_predictions(args.output_file, reads[0].ids, combine(aligned(reads), weights, args.method))
    print(f"wrote {len(reads[0].ids)} blended predictions to {args.output_file}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oof", nargs="+", help="out-of-fold prediction files with labels, to fit the weights on")
    parser.add_argument("--predictions", nargs="+", help="prediction files to blend")
    parser.add_argument("--output_file", help="where the blend goes")
    parser.add_argument("--weights", nargs="+", type=float,
                        help="one per file (normalised); default: fitted on --oof, else equal")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    try:
        main(parser.parse_args())
    except DataError as e:
        sys.exit(f"error: {e}")
