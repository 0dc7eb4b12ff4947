"""What train_unsloth.py and infer.py share, one job per module (docs/architecture.md: the layout and the path of
one row from a CSV to a probability):

- errors.py        DataError, the usage error: one line, exit code 1
- data.py          read CSV / Parquet / JSON Lines into `Pair` records (three-way or two-way layout), folds by prompt
- swap.py          the A/B swap: pairs, labels, probability and logit columns, --tta's views, --swap_augment's sides
- prompts.py       render a pair into token ids under a budget (training and inference alike), label tokens
- loading.py       the compute dtype, unsloth's model loading (local folders offline), the base-model check
- label_logits.py  the label logits: the output layer swapped for the label rows or head (training and scoring)
- label_head.py    --label_head rows|scaled|fresh: the label logits' own [labels, hidden] head and start bias; saving, loading
- losses.py        training losses (token, label-only, distillation) and the SFTTrainer that computes them
- scoring.py       length-sorted, token-budget batches; last-position label logits; log loss; the batch cache
- calibration.py   a temperature on the label logits and priors for degenerate battles, fitted on held-out rows
- predictions.py   predictions files (oof.csv, submissions, id,winner, teacher targets); `Heldout`, rows in memory
- assessment.py    metrics and the Bayes limit, computed, printed and written in one place; calibration and pictures
- pictures.py      reliability diagrams, confusion matrix and log loss by subgroup
- crossval.py      --fold all: finished folds, and the CV summary of every fold
- ensemble.py      combining several runs' probabilities (fitted weights), several adapters on one base
- run_folder.py    the run folder: every file name in it, reading and writing them, checkpoints, versions
- processes.py     this process's place among those accelerate started
- report.py        the dry-run table of what the data looks like under a tokenizer and budget
- config.py        settings as dataclasses (every field a flag, or a key in a --config YAML file)
- io.py            atomic writes of files and folders
"""
