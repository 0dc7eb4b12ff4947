"""The dry-run report: what the training data looks like under the chosen tokenizer and budget."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from arena.data import CLASS_NAMES, Split
from arena.prompts import Renderer


def data_report(split: Split, renderer: Renderer, run: str) -> str:
    """A plain-text table; also saves a token-length histogram to `run`/lengths.png."""
    pairs = split.train + split.heldout
    rendered = renderer.render_many(pairs)
    lengths = np.array([len(r.ids) + 1 for r in rendered])  # + the label token
    turns = np.array([r.turns for r in rendered])
    lines = [f"{'rows per source':<44}"]
    for source, n in Counter(p.source for p in pairs).items():
        lines.append(f"  {source:<42}{n:>10}")
    lines.append("class balance")
    classes = Counter(p.label for p in pairs)
    for label, name in enumerate(CLASS_NAMES):
        lines.append(f"  {name:<42}{classes[label]:>10}  {classes[label] / len(pairs):6.1%}")
    lines.append("turns per row")
    for n, count in sorted(Counter(turns.tolist()).items()):
        lines.append(f"  {n:<42}{count:>10}")
    lines.append(f"tokens per row (budget {renderer.max_length}, label included)")
    for q in (50, 90, 95, 99, 100):
        lines.append(f"  {'p' + str(q):<42}{int(np.percentile(lengths, q)):>10}")
    dropped = sum(r.dropped_turns > 0 for r in rendered)
    shortened = sum(r.shortened_texts > 0 for r in rendered)
    lines.append(f"{'rows that lost earliest turns':<44}{dropped:>10}  {dropped / len(pairs):6.1%}")
    lines.append(f"{'rows with shortened texts':<44}{shortened:>10}  {shortened / len(pairs):6.1%}")
    lines.append(f"{'answer empty on one side':<44}{sum(p.one_empty for p in pairs):>10}")
    lines.append(f"{'both answers identical':<44}{sum(p.identical for p in pairs):>10}")
    for name, count in split.counts.items():
        lines.append(f"{name:<44}{count:>10}")
    png = os.path.join(run, "lengths.png")
    save_histogram(png, lengths, renderer.max_length)
    lines.append(f"length histogram: {png}")
    return "\n".join(lines)


def save_histogram(path: str, lengths: np.ndarray, budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from arena.io import atomic_open

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths, bins=50, color="#4c72b0")
    ax.axvline(budget, color="#c44e52", linestyle="--", label=f"budget {budget}")
    ax.set_xlabel("tokens per row (after fitting the budget)")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
