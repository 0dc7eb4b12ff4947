"""The dry-run report: what the training data looks like under the chosen tokenizer and budget."""

from __future__ import annotations

from collections import Counter

import numpy as np

from arena.data import CLASS_NAMES, Split
from arena.prompts import Renderer
from arena.run_folder import LENGTHS
from arena.run_folder import path as run_file

TOP_LANGUAGES = 10  # the dry run lists this many languages by row count, then "other"
TURN_BUCKETS = {"1": (1, 1), "2": (2, 2), "3": (3, 3), "4-5": (4, 5), "6-10": (6, 10), "11+": (11, np.inf)}
PERCENTILES = (50, 90, 95, 99, 100)


def data_report(split: Split, renderer: Renderer, run: str) -> str:
    """A plain-text table of the training and held-out rows; also saves a token-length histogram to
    `run`/lengths.png."""
    pairs = split.train + split.heldout
    n = len(pairs)
    needed, fitted, turns, dropped, shortened = [], [], [], 0, 0
    for r in renderer.iter_render(pairs):  # streamed: only the lengths are kept
        needed.append(r.full_length)
        fitted.append(len(r.ids) + 1)  # + the label token
        turns.append(r.turns)
        dropped += r.dropped_turns > 0
        shortened += r.shortened_texts > 0
    needed, fitted, turns = np.array(needed), np.array(fitted), np.array(turns)

    def row(name, count, share=True):
        return f"  {name:<46}{count:>10}" + (f"  {count / n:6.1%}" if share else "")

    lines = ["rows per source (training and held-out, after duplicates and leaks are left out)"]
    lines += [row(source, count) for source, count in Counter(p.source for p in pairs).items()]
    lines.append("class balance")
    classes = Counter(p.label for p in pairs)
    lines += [row(name, classes[label]) for label, name in enumerate(CLASS_NAMES[: len(renderer.label_ids)])]
    lines.append("turns per row")
    lines += [row(name, int(((turns >= low) & (turns <= high)).sum())) for name, (low, high) in TURN_BUCKETS.items()]
    lines.append(f"{'tokens per row, label included':<48}{'needed':>10}  {'fitted to ' + str(renderer.max_length):>16}")
    for q in PERCENTILES:
        name = "max" if q == 100 else f"p{q}"
        lines.append(f"  {name:<46}{int(np.percentile(needed, q)):>10}  {int(np.percentile(fitted, q)):>16}")
    if any(p.language for p in pairs):
        lines += language_lines([p.language for p in pairs], needed)
    lines += ["fitting the budget", row("rows that lost earliest turns", dropped),
              row("rows with shortened texts", shortened)]
    lines += ["flagged rows (the one_empty and identical columns of oof.csv)",
              row("answer empty on one side", sum(p.one_empty for p in pairs)),
              row("both answers identical", sum(p.identical for p in pairs))]
    lines.append("counts")
    lines += [row(name, count, share=False) for name, count in split.counts.items()]
    png = run_file(run, LENGTHS)
    save_histogram(png, needed, fitted, renderer.max_length)
    lines.append(f"length histogram: {png}")
    return "\n".join(lines)


def language_lines(languages: list[str], needed: np.ndarray) -> list[str]:
    """Rows and tokens needed (label included) per language, the most frequent first, then "other"; rows without a
    language are "(none)"."""
    names = [name or "(none)" for name in languages]
    top = [name for name, _ in Counter(names).most_common(TOP_LANGUAGES)]
    groups = {name: [] for name in top}
    for name, length in zip(names, needed):
        groups.setdefault(name if name in groups else "other", []).append(length)
    lines = [f"{'languages (top ' + str(TOP_LANGUAGES) + ', then other)':<48}{'rows':>10}  {'share':>6}"
             f"  {'tokens p50':>10}  {'p90':>6}  {'max':>6}"]
    for name, lengths in groups.items():
        p50, p90, top_length = (int(np.percentile(lengths, q)) for q in (50, 90, 100))
        lines.append(f"  {name[:46]:<46}{len(lengths):>10}  {len(lengths) / len(names):6.1%}"
                     f"  {p50:>10}  {p90:>6}  {top_length:>6}")
    return lines


def save_histogram(path: str, needed: np.ndarray, fitted: np.ndarray, budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from arena.io import atomic_open

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, max(2 * budget, 1), 61)
    ax.hist(np.minimum(needed, bins[-1]), bins=bins, color="#dd8452", alpha=0.6, label="needed (capped at 2x budget)")
    ax.hist(fitted, bins=bins, color="#4c72b0", alpha=0.6, label="fitted")
    ax.axvline(budget, color="#c44e52", linestyle="--", label=f"budget {budget}")
    ax.set_xlabel("tokens per row, label included")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
