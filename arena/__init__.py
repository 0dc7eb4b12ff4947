"""What train_unsloth.py and infer.py share, one job per module:

- data.py     read CSV / Parquet / JSON Lines into `Pair` records, folds grouped by prompt, clear errors
- prompts.py  render a pair into token ids under a budget (the same for training and inference), label tokens,
              optionally inside the tokenizer's chat template
- scoring.py  length-sorted, token-budget batches; last-position logits; swap TTA; log loss
- label_head.py --label_head: a trainable scale and bias on the label logits; its trainer, saving, loading
- report.py   the dry-run table of what the data looks like under a tokenizer and budget
- config.py   settings as dataclasses (every field a command-line flag, or a key in a --config YAML file)
- run.py      the run folder: loading a model through unsloth, versions, atomic outputs of predictions
- io.py       atomic file writes
"""
