"""Predictions files: a submission or oof.csv (`id, winner_model_a, winner_model_b, winner_tie`, two-way without
`winner_tie`, then any other columns), the two-way competition's `id,winner` submission, reading any of them back
(a teacher file, a file to blend, the demo's truth.csv), and teacher targets for distillation.

A run's held-out rows stay in memory as a `Heldout` (ids, probabilities, label logits, labels and what each row is
like); oof.csv is written from it, an output. Only `--fold all`'s summary, which combines folds that may have been
trained by earlier processes, reads the folds' oof.csv back into `Heldout`s.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

from arena.calibration import RowFlags
from arena.data import CLASS_NAMES, LABEL_COLUMNS, WINNER_COLUMN, WINNERS, BadRows, Pair, RowError, read_table
from arena.errors import DataError
from arena.io import atomic_open
from arena.prompts import Rendered
from arena.swap import VIEWS

# what fitting the budget did to each row: oof.csv's column, and the `Rendered` field it comes from
FACTS = {"turns": "turns", "dropped_turns": "dropped_turns", "shortened_texts": "shortened_texts",
         "tokens": "full_length"}


@dataclass
class Heldout:
    """A run's held-out rows in memory: ids, probabilities [n, labels], label logits [n, views, labels], labels,
    and row facts: `flags` (which answer is empty, identical; for the priors) and `facts` (one_empty, identical,
    turns, dropped_turns, shortened_texts, tokens; for the breakdowns)."""

    ids: list[str]
    probs: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    flags: RowFlags
    facts: dict[str, np.ndarray]

    @classmethod
    def of_pairs(cls, pairs: list[Pair], rendered: list[Rendered], logits: np.ndarray, probs: np.ndarray) -> Heldout:
        flags = RowFlags.of_pairs(pairs)
        facts = {"one_empty": flags.empty_side >= 0, "identical": flags.identical,
                 **{name: np.array([getattr(r, field) for r in rendered], dtype=int) for name, field in FACTS.items()}}
        return cls([p.id for p in pairs], probs, logits, np.array([p.label for p in pairs]), flags, facts)

    @classmethod
    def of_predictions(cls, read: Predictions) -> Heldout:
        """From an oof.csv read back (`read_predictions`)."""
        flags = RowFlags(read.empty_side(), read.flags("identical"))
        facts = {"one_empty": read.flags("one_empty"), "identical": flags.identical,
                 **{name: read.numbers(name).astype(int) for name in FACTS}}
        return cls(read.ids, read.probs, read.logits(), read.labels(), flags, facts)

    @classmethod
    def concat(cls, parts: list[Heldout]) -> Heldout:
        return cls(
            [i for part in parts for i in part.ids],
            *(np.concatenate([getattr(part, name) for part in parts]) for name in ("probs", "logits", "labels")),
            RowFlags(*(np.concatenate([getattr(part.flags, name) for part in parts])
                       for name in ("empty_side", "identical"))),
            {name: np.concatenate([part.facts[name] for part in parts]) for name in parts[0].facts},
        )

    def columns(self) -> dict[str, list]:
        """oof.csv's columns after the probabilities: the label; what the row is like (its flags, which answer is
        empty, turns, what fitting the budget cut, tokens needed), for the breakdowns and the priors; and the label
        logits as `logit_A`, `logit_B`, `logit_tie` (and `logit_A_swapped`, ... with --tta)."""
        columns = {
            "label": self.labels.tolist(),
            "one_empty": self.facts["one_empty"].tolist(),
            "identical": self.facts["identical"].tolist(),
            "empty_answer": [CLASS_NAMES[side] if side >= 0 else "" for side in self.flags.empty_side.tolist()],
            **{name: self.facts[name].tolist() for name in FACTS},
        }
        for view in range(self.logits.shape[1]):
            for label in range(self.logits.shape[2]):
                columns[f"logit_{CLASS_NAMES[label]}{VIEWS[view]}"] = self.logits[:, view, label].tolist()
        return columns

    def write(self, path: str, extra: dict[str, list] | None = None) -> None:
        """oof.csv: the probabilities, then `columns()`, then `extra` columns."""
        write_predictions(path, self.ids, self.probs, {**self.columns(), **(extra or {})})


def write_predictions(
    path: str, rows: list[Pair] | list[str], probs: np.ndarray, extra: dict[str, list] | None = None
) -> None:
    """`id, winner_model_a, winner_model_b, winner_tie` (the Kaggle submission; two-way: without `winner_tie`), then
    any `extra` columns; `rows` are the pairs or their ids. `read_predictions` reads it back."""
    extra = extra or {}
    with atomic_open(path) as f:
        writer = csv.writer(f)
        writer.writerow(["id", *LABEL_COLUMNS[: probs.shape[1]], *extra])
        for i, (row, p) in enumerate(zip(rows, probs)):
            writer.writerow([getattr(row, "id", row), *map(float, p), *(column[i] for column in extra.values())])


def winners_file(path: str) -> str:
    """Where infer.py writes the two-way submission beside the probabilities: sub.csv -> sub_winner.csv."""
    return os.path.splitext(path)[0] + "_winner.csv"


def write_winners(path: str, rows: list[Pair] | list[str], probs: np.ndarray) -> None:
    """The two-way (WSDM Cup) submission: `id, winner`, the more probable of model_a and model_b."""
    with atomic_open(path) as f:
        writer = csv.writer(f)
        writer.writerow(["id", WINNER_COLUMN])
        writer.writerows([getattr(row, "id", row), WINNERS[int(p[1] > p[0])]] for row, p in zip(rows, probs))


@dataclass
class Predictions:
    """A predictions file (a submission or oof.csv) as read back: ids, probabilities, and the other columns as text."""

    path: str
    ids: list[str]
    probs: np.ndarray
    columns: dict[str, list[str]]

    def by_id(self) -> dict[str, np.ndarray]:
        return dict(zip(self.ids, self.probs))

    def numbers(self, name: str) -> np.ndarray:
        return self._parsed(name, float)

    def flags(self, name: str) -> np.ndarray:
        return self._parsed(name, lambda text: {"True": True, "False": False}[text]).astype(bool)

    def labels(self) -> np.ndarray | None:
        """The `label` column as integers, or None when the file has none (a submission)."""
        return self.numbers("label").astype(int) if "label" in self.columns else None

    def empty_side(self) -> np.ndarray:
        """`Pair.empty_side` of every row, from the `empty_answer` column."""
        return self._parsed("empty_answer", lambda text: CLASS_NAMES.index(text) if text else -1).astype(int)

    def logits(self) -> np.ndarray | None:
        """The label logits [n, views, labels] written by `Heldout.columns`, or None when the file has none."""
        views = [
            np.stack([self.numbers(f"logit_{name}{suffix}") for name in CLASS_NAMES[: self.probs.shape[1]]], axis=1)
            for suffix in VIEWS
            if f"logit_{CLASS_NAMES[0]}{suffix}" in self.columns
        ]
        return np.stack(views, axis=1) if views else None

    def _parsed(self, name: str, parse) -> np.ndarray:
        if name not in self.columns:
            raise DataError(f"{self.path}: no column {name}")
        out = []
        for row, text in enumerate(self.columns[name], 1):
            try:
                out.append(parse(text))
            except (ValueError, KeyError):
                raise DataError(f"{self.path}: row {row} (id {self.ids[row - 1]}), column {name}: "
                                f"cannot read {text!r}") from None
        return np.array(out)


def read_predictions(path: str, on_bad_row: str = "error", bad_rows: BadRows | None = None) -> Predictions:
    """Reads back what `write_predictions` writes (an oof.csv, a submission; also the demo's truth.csv, and the same
    columns in Parquet or JSON Lines): ids, probabilities (each row normalised to sum to 1) and the other columns as
    text; without a `winner_tie` column the file is two-way (two probabilities a row). A row with an empty or
    repeated id, or probabilities that are not non-negative numbers, stops the run, or with `on_bad_row="skip"` is
    recorded in `bad_rows` and left out."""
    columns, rows = read_table(path)
    missing = [c for c in ("id", *LABEL_COLUMNS[:2]) if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a predictions file has id, "
                        f"{', '.join(LABEL_COLUMNS)} (two-way: without {LABEL_COLUMNS[2]})")
    probability_columns = LABEL_COLUMNS if LABEL_COLUMNS[2] in columns else LABEL_COLUMNS[:2]
    others = [c for c in columns if c not in ("id", *probability_columns)]
    ids, probs, text, seen = [], [], {c: [] for c in others}, {}
    for i, row in rows:
        row_id = "" if row.get("id") is None else str(row.get("id"))
        try:
            if getattr(row, "problem", None):  # a row the file format itself could not parse
                raise RowError(path, i, "", "", row.problem)
            if not row_id:
                raise RowError(path, i, "", "id", "empty id")
            if row_id in seen:
                raise RowError(path, i, row_id, "id", f"duplicate id (first seen on row {seen[row_id]})")
            probs.append(_probabilities(path, i, row_id, row, probability_columns))
        except RowError as e:
            if on_bad_row != "skip" or bad_rows is None:
                raise
            bad_rows.add(e)
            continue
        seen[row_id] = i
        ids.append(row_id)
        for c in others:
            text[c].append("" if row.get(c) is None else str(row.get(c)))
    return Predictions(path, ids, np.array(probs).reshape(len(ids), len(probability_columns)), text)


def _probabilities(path: str, i: int, row_id: str, row: dict, columns: tuple[str, ...]) -> np.ndarray:
    values = []
    for column in columns:
        try:
            values.append(float(row[column]))
        except (KeyError, TypeError, ValueError):
            raise RowError(path, i, row_id, column, f"probability {row.get(column)!r} is not a number") from None
        if not np.isfinite(values[-1]) or values[-1] < 0:
            raise RowError(path, i, row_id, column, f"probability {values[-1]!r} is not a non-negative number")
    if sum(values) <= 0:
        raise RowError(path, i, row_id, "/".join(columns), "probabilities sum to 0")
    return np.array(values) / sum(values)


def teacher_probs(
    paths: list[str], pairs: list[Pair], on_bad_row: str = "error", bad_rows: BadRows | None = None,
    n_labels: int = 3,
) -> tuple[list[Pair], list[list[float]]]:
    """Soft labels for training pairs: the average of the teacher files' probabilities for each pair's id; each file
    must have `n_labels` probability columns (three, or two for a two-way run). A pair that a file has no row for
    stops the run, or with `on_bad_row="skip"` is left out and recorded in `bad_rows`. Returns the pairs kept and
    their probabilities."""
    bad_rows = BadRows() if bad_rows is None else bad_rows
    tables = []
    for path in paths:
        read = read_predictions(path, on_bad_row, bad_rows)
        if read.probs.shape[1] != n_labels:
            raise DataError(f"{path}: a teacher file of {read.probs.shape[1]} probability columns for a run of "
                            f"{n_labels} labels")
        tables.append((path, read.by_id()))
    kept, probs = [], []
    for pair in pairs:
        missing = next((path for path, table in tables if pair.id not in table), None)
        if missing is None:
            kept.append(pair)
            probs.append(np.mean([table[pair.id] for _, table in tables], axis=0).tolist())
            continue
        problem = f"no teacher row for training row id {pair.id} (of {pair.source})"
        if on_bad_row != "skip":
            raise DataError(f"{missing}: {problem}")
        bad_rows.rows.append((missing, "", pair.id, "id", problem))
    return kept, probs
