"""What train_unsloth.py and infer.py share, one job per module:

- data.py     read CSV / Parquet / JSON Lines into `Pair` records, folds grouped by prompt, clear errors
- prompts.py  render a pair into token ids under a budget (the same for training and inference), label tokens
- scoring.py  length-sorted, token-budget batches; last-position logits; swap TTA; log loss
- report.py   the dry-run table of what the data looks like under a tokenizer and budget
- losses.py   training losses (token, label-only, distillation from soft labels) and the SFTTrainer that computes them
- config.py   settings as dataclasses (every field a command-line flag, or a key in a --config YAML file)
- run.py      the run folder: loading a model through unsloth, versions, predictions written atomically and read back
              (teacher files), the demo's Bayes limit
- io.py       atomic writes of files and folders
"""
