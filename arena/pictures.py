"""The pictures of a run's held-out predictions (PNG files in the run folder) and the breakdown they show:

- reliability.png  per class: predicted probability against how often that class won, before and after calibration
                   (10 bins; a dot's area is the bin's share of the rows)
- confusion.png    true label against the most likely label, as shares of each true label
- subgroups.png    log loss by subgroup (turns, rows that lost turns or had texts cut, one_empty, identical,
                   length quartile), before and after calibration; the same table goes into metrics.json
"""

from __future__ import annotations

import os

import numpy as np

from arena.data import CLASS_NAMES
from arena.io import atomic_open
from arena.run_folder import PICTURES
from arena.scoring import log_loss

RELIABILITY_BINS = 10


def subgroups(facts: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(name, row mask) of each subgroup of held-out rows, from their facts (`arena.predictions.Heldout.facts`)."""
    turns, tokens = facts["turns"], facts["tokens"]
    cut = (facts["dropped_turns"] > 0) | (facts["shortened_texts"] > 0)
    groups = [
        ("all", np.ones(len(tokens), dtype=bool)),
        ("1 turn", turns == 1),
        ("2+ turns", turns >= 2),
        ("lost turns or texts cut", cut),
        ("fitted in full", ~cut),
        ("one_empty", facts["one_empty"]),
        ("identical", facts["identical"]),
    ]
    edges = np.quantile(tokens, [0.25, 0.5, 0.75]) if len(tokens) else np.zeros(3)
    quartile = np.searchsorted(edges, tokens, side="left")
    bounds = [tokens.min() if len(tokens) else 0, *edges, tokens.max() if len(tokens) else 0]
    for q in range(4):
        groups.append((f"length Q{q + 1} ({bounds[q]:.0f}-{bounds[q + 1]:.0f} tokens)", quartile == q))
    return groups


def subgroup_table(
    facts: dict[str, np.ndarray], before: np.ndarray, after: np.ndarray, labels: np.ndarray
) -> list[dict]:
    """Log loss of every subgroup, before and after calibration (None for an empty subgroup)."""
    table = []
    for name, rows in subgroups(facts):
        n = int(rows.sum())
        table.append({
            "group": name,
            "n": n,
            "log_loss_before": log_loss(before[rows], labels[rows]) if n else None,
            "log_loss_after": log_loss(after[rows], labels[rows]) if n else None,
        })
    return table


def draw(
    folder: str, facts: dict[str, np.ndarray], before: np.ndarray, after: np.ndarray, labels: np.ndarray
) -> list[dict]:
    """Writes the three pictures into `folder`; returns the subgroup table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = CLASS_NAMES[: before.shape[1]]
    table = subgroup_table(facts, before, after, labels)
    figures = (reliability(plt, before, after, labels, names), confusion(plt, before, labels, names),
               subgroup_bars(plt, table))
    for name, fig in zip(PICTURES, figures):
        fig.tight_layout()
        with atomic_open(os.path.join(folder, name), "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        plt.close(fig)
    return table


def reliability(plt, before, after, labels, names):
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    edges = np.linspace(0, 1, RELIABILITY_BINS + 1)
    for c, ax in enumerate(axes[0]):
        ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1)
        for probs, label, color in ((before, "before", "#dd8452"), (after, "after", "#4c72b0")):
            which = np.clip(np.digitize(probs[:, c], edges) - 1, 0, RELIABILITY_BINS - 1)
            filled = [b for b in range(RELIABILITY_BINS) if (which == b).any()]
            predicted = [probs[which == b, c].mean() for b in filled]
            observed = [(labels[which == b] == c).mean() for b in filled]
            rows = np.array([(which == b).sum() for b in filled])
            ax.plot(predicted, observed, color=color, alpha=0.5, linewidth=1)
            ax.scatter(predicted, observed, s=8 + 400 * rows / len(labels), color=color, label=label)
        ax.set_title(f"{names[c]}: {len(labels)} rows (dot area: rows in the bin)")
        ax.set_xlabel(f"predicted P({names[c]})")
        ax.set_ylabel("observed share")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left")
    return fig


def confusion(plt, probs, labels, names):
    k = len(names)
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (labels, probs.argmax(axis=1)), 1)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.5 * k + 2, 1.5 * k + 1))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for t in range(k):
        for p in range(k):
            ax.text(p, t, f"{shares[t, p]:.2f}\n({counts[t, p]})", ha="center", va="center",
                    color="white" if shares[t, p] > 0.5 else "black")
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("most likely label")
    ax.set_ylabel("true label")
    return fig


def subgroup_bars(plt, table):
    shown = [row for row in table if row["n"]]
    y = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.2))
    ax.barh(y - 0.2, [row["log_loss_before"] for row in shown], height=0.4, color="#dd8452", label="before")
    ax.barh(y + 0.2, [row["log_loss_after"] for row in shown], height=0.4, color="#4c72b0", label="after calibration")
    ax.set_yticks(y, [f"{row['group']}  n={row['n']}" for row in shown])
    ax.invert_yaxis()
    ax.set_xlabel("log loss")
    ax.legend(loc="lower right")
    return fig
