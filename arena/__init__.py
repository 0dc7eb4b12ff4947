"""What train_unsloth.py and infer.py share, one job per module:

- data.py     read CSV / Parquet / JSON Lines into `Pair` records (three-way Kaggle or two-way WSDM layout), folds
              grouped by prompt, clear errors
- prompts.py  render a pair into token ids under a budget (the same for training and inference), label tokens,
              optionally inside the tokenizer's chat template
- scoring.py  length-sorted, token-budget batches; last-position label logits; swap TTA; log loss
- calibration.py  a temperature on the label logits and priors for degenerate battles, fitted on held-out rows
- ensemble.py     combining several runs' probabilities (fitted weights), several adapters on one base, files by id
- pictures.py     reliability diagrams, confusion matrix and log loss by subgroup of a run's held-out rows
- crossval.py     a run's held-out assessment (calibration.json, pictures) and --fold all's folds and CV summary
- label_head.py --label_head: a trainable scale and bias on the label logits; its trainer, saving, loading
- report.py   the dry-run table of what the data looks like under a tokenizer and budget
- losses.py   training losses (token, label-only, distillation from soft labels) and the SFTTrainer that computes them
- config.py   settings as dataclasses (every field a command-line flag, or a key in a --config YAML file)
- run.py      the run folder: loading a model through unsloth (dtype, offline, a local base), versions, predictions
              written atomically and read back (oof.csv, submissions, teacher files; 3 or 2 classes), the two-way
              id,winner submission, the demo's Bayes limit
- io.py       atomic writes of files and folders
"""
