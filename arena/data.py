"""Reading preference data into one record type, `Pair`, and splitting it into folds.

Formats: CSV, Parquet and JSON Lines. Shapes:
- arena: `prompt`, `response_a`, `response_b` (JSON lists of turns, or native lists), optional `id` and the
  one-hot `winner_model_a`, `winner_model_b`, `winner_tie` (Kaggle train/test, the 33k set);
- HH-RLHF: `chosen`, `rejected` transcripts with "\\n\\nHuman: " / "\\n\\nAssistant: " turns;
- UltraFeedback: `prompt`, `chosen`, `rejected` where chosen/rejected are lists of {role, content} messages.
Pairwise (chosen/rejected) rows are mapped to A/B by a seeded random swap; they have no ties.

Bad input raises `DataError` with one line naming file, row, column and problem; with `on_bad_row="skip"` the row
is skipped and recorded in `BadRows` instead, so nothing is dropped without a record.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field, replace

LABEL_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")
ARENA_COLUMNS = ("prompt", "response_a", "response_b")
PAIRWISE_COLUMNS = ("chosen", "rejected")
CLASS_NAMES = ("A", "B", "tie")


class DataError(Exception):
    """Bad input: the message is one line naming file, row, column and problem."""


@dataclass(frozen=True)
class Pair:
    """One battle: a prompt of one or more turns and the two bots' answers, turn by turn.

    Missing (`null`) turns and empty strings are both stored as "". `label` is 0 (A won), 1 (B won), 2 (tie)
    or None (unlabelled, e.g. test.csv)."""

    id: str
    prompt: tuple[str, ...]
    response_a: tuple[str, ...]
    response_b: tuple[str, ...]
    label: int | None = None
    source: str = ""

    @property
    def one_empty(self) -> bool:
        """Exactly one of the two answers is empty in every turn."""
        return (not any(self.response_a)) != (not any(self.response_b))

    @property
    def identical(self) -> bool:
        return self.response_a == self.response_b

    def swapped(self) -> Pair:
        """The same battle with A and B exchanged (label 0 <-> 1, tie stays)."""
        label = {0: 1, 1: 0}.get(self.label, self.label)
        return replace(self, response_a=self.response_b, response_b=self.response_a, label=label)


@dataclass
class BadRows:
    """Rows skipped under `on_bad_row="skip"`: (file, row, id, column, problem)."""

    rows: list[tuple[str, int, str, str, str]] = field(default_factory=list)

    def add(self, error: RowError) -> None:
        self.rows.append((error.path, error.row, error.id, error.column, error.problem))

    def write(self, path: str) -> None:
        from arena.io import atomic_open

        with atomic_open(path) as f:
            writer = csv.writer(f)
            writer.writerow(["file", "row", "id", "column", "problem"])
            writer.writerows(self.rows)


class RowError(DataError):
    def __init__(self, path: str, row: int, row_id: str, column: str, problem: str):
        self.path, self.row, self.id, self.column, self.problem = path, row, row_id, column, problem
        where = f"row {row}" + (f" (id {row_id})" if row_id else "")
        super().__init__(f"{path}: {where}, column {column}: {problem}")


# ---------------------------------------------------------------------------------------------------- text cells


def repair_text(text: str) -> str:
    """Pairs up surrogate halves and replaces lone surrogates (invalid in UTF-8) with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def parse_turns(value, column: str) -> list[str]:
    """A cell of turns: a JSON-encoded list (the Kaggle CSVs) or a native list (Parquet / JSON Lines)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON ({e.msg} at char {e.pos}); expected a JSON list of strings") from None
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {type(value).__name__}")
    turns = []
    for turn in value:
        if turn is None:
            turns.append("")
        elif isinstance(turn, str):
            turns.append(repair_text(turn))
        else:
            raise ValueError(f"expected a list of strings, found a {type(turn).__name__} item")
    return turns


def parse_label(row: dict) -> int:
    values = []
    for column in LABEL_COLUMNS:
        value = row[column]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{column}: label {value!r} is not a number") from None
        values.append(number)
    if sorted(values) != [0.0, 0.0, 1.0]:
        shown = ", ".join(f"{v:g}" for v in values)
        raise ValueError(f"labels are not one-hot ({shown})")
    return values.index(1.0)


def pad_turns(*lists: list[str]) -> tuple[tuple[str, ...], ...]:
    """Unequal turn counts across prompt / A / B: pad the shorter lists with empty turns."""
    n = max(1, *(len(x) for x in lists))
    return tuple(tuple(x) + ("",) * (n - len(x)) for x in lists)


def split_transcript(text: str) -> tuple[list[str], list[str]]:
    """HH-RLHF transcript -> (human turns, assistant turns)."""
    humans, assistants = [], []
    for chunk in ("\n\n" + text.lstrip("\n")).split("\n\nHuman: ")[1:]:
        human, _, assistant = chunk.partition("\n\nAssistant: ")
        humans.append(repair_text(human))
        assistants.append(repair_text(assistant))
    if not humans:
        raise ValueError('no "Human: " turn found')
    return humans, assistants


def split_messages(value) -> tuple[list[str], list[str]]:
    """UltraFeedback message list [{role, content}, ...] -> (user turns, assistant turns)."""
    if isinstance(value, str):
        value = json.loads(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    users, assistants = [], []
    for message in value:
        role, content = message.get("role"), repair_text(message.get("content") or "")
        if role == "user":
            users.append(content)
            assistants.append("")
        elif role == "assistant":
            if not assistants:
                users.append("")
                assistants.append("")
            assistants[-1] += content
    if not users:
        raise ValueError("no user message found")
    return users, assistants


# ---------------------------------------------------------------------------------------------------- files


def iter_rows(path: str):
    """(row number, dict) for each data row; row 1 is the first row after the header."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected a .csv, .parquet or .jsonl file")
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        yield from _csv_rows(path)
    elif ext in (".jsonl", ".json"):
        yield from _jsonl_rows(path)
    elif ext in (".parquet", ".pq"):
        yield from _parquet_rows(path)
    else:
        raise DataError(f"{path}: unknown file type {ext!r}; use .csv, .parquet or .jsonl")


def _check_utf8(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line})") from None


def _csv_rows(path: str):
    _check_utf8(path)
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: file is empty")
        for i, values in enumerate(reader, start=1):
            if not values:
                continue
            if len(values) != len(header):
                yield i, _BrokenRow(f"has {len(values)} fields, the header has {len(header)}")
            else:
                yield i, dict(zip(header, values))


def _jsonl_rows(path: str):
    _check_utf8(path)
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield i, _BrokenRow(f"invalid JSON line ({e.msg} at char {e.pos})")
                continue
            yield i, row if isinstance(row, dict) else _BrokenRow("line is not a JSON object")


def _parquet_rows(path: str):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read Parquet ({str(e).splitlines()[0]})") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield i, row


class _BrokenRow(dict):
    """A row the file format itself could not parse."""

    def __init__(self, problem: str):
        super().__init__()
        self.problem = problem


def detect_shape(path: str, columns) -> str:
    columns = set(columns)
    if set(ARENA_COLUMNS) <= columns:
        return "arena"
    if set(PAIRWISE_COLUMNS) <= columns:
        return "ultrafeedback" if "prompt" in columns else "hh-rlhf"
    missing = [c for c in ARENA_COLUMNS if c not in columns]
    raise DataError(
        f"{path}: missing column(s) {', '.join(missing)}; expected the arena columns "
        f"{', '.join(ARENA_COLUMNS)} or the pairwise columns {', '.join(PAIRWISE_COLUMNS)}"
    )


def read_pairs(path: str, on_bad_row: str = "error", bad_rows: BadRows | None = None, seed: int = 0) -> list[Pair]:
    """Reads one file into Pairs. `on_bad_row`: "error" stops at the first bad row, "skip" records it in
    `bad_rows` and goes on. File-level problems (missing file, unknown shape, no rows) always stop."""
    if on_bad_row not in ("error", "skip"):
        raise DataError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    pairs, seen_ids, shape, labelled = [], {}, None, False
    stem = os.path.splitext(os.path.basename(path))[0]
    n_rows = 0
    for i, row in iter_rows(path):
        n_rows += 1
        row_id = ""
        try:
            if isinstance(row, _BrokenRow):
                raise RowError(path, i, "", "(row)", row.problem)
            if shape is None:
                shape = detect_shape(path, row.keys())
                present = [c for c in LABEL_COLUMNS if c in row]
                if present and len(present) < len(LABEL_COLUMNS):
                    missing = [c for c in LABEL_COLUMNS if c not in row]
                    raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(present)})")
                labelled = bool(present)
            row_id = str(row["id"]) if row.get("id") not in (None, "") else f"{stem}-{i}"
            pair = _make_pair(path, i, row_id, row, shape, labelled, seed)
            if row_id in seen_ids:
                raise RowError(path, i, row_id, "id", f"duplicate id (first seen on row {seen_ids[row_id]})")
            seen_ids[row_id] = i
            pairs.append(pair)
        except RowError as e:
            if on_bad_row == "error":
                raise
            bad_rows.add(e)
        except KeyError as e:
            # a JSON Lines / Parquet row without a column the first row had
            error = RowError(path, i, row_id, e.args[0], "column missing in this row")
            if on_bad_row == "error":
                raise error from None
            bad_rows.add(error)
    if n_rows == 0:
        raise DataError(f"{path}: no data rows")
    return pairs


def _make_pair(path: str, i: int, row_id: str, row: dict, shape: str, labelled: bool, seed: int) -> Pair:
    column = ""
    try:
        if shape == "arena":
            turns = []
            for column in ARENA_COLUMNS:
                turns.append(parse_turns(row[column], column))
            column = "winner_model_a/winner_model_b/winner_tie"
            label = parse_label(row) if labelled else None
            prompt, a, b = pad_turns(*turns)
            return Pair(row_id, prompt, a, b, label, path)
        if shape == "hh-rlhf":
            column = "chosen"
            prompt, chosen = split_transcript(row["chosen"])
            column = "rejected"
            prompt_r, rejected = split_transcript(row["rejected"])
            if len(prompt_r) > len(prompt):
                prompt = prompt_r
        else:
            column = "chosen"
            prompt, chosen = split_messages(row["chosen"])
            column = "rejected"
            prompt_r, rejected = split_messages(row["rejected"])
            if len(prompt_r) > len(prompt):
                prompt = prompt_r
        prompt, chosen, rejected = pad_turns(prompt, chosen, rejected)
        if chosen_goes_to_b(seed, row_id):
            return Pair(row_id, prompt, rejected, chosen, 1, path)
        return Pair(row_id, prompt, chosen, rejected, 0, path)
    except (ValueError, TypeError, AttributeError) as e:
        raise RowError(path, i, row_id, column, str(e).splitlines()[0] or type(e).__name__) from None


def chosen_goes_to_b(seed: int, row_id: str) -> bool:
    """The seeded, per-row coin flip that maps a chosen/rejected pair to A/B."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return digest[0] & 1 == 1


# ---------------------------------------------------------------------------------------------------- combining


def prompt_key(pair: Pair) -> str:
    return json.dumps(pair.prompt, ensure_ascii=False)


def pair_key(pair: Pair) -> str:
    """Same prompt and the same two answers, in either order."""
    answers = sorted([json.dumps(pair.response_a, ensure_ascii=False), json.dumps(pair.response_b, ensure_ascii=False)])
    return json.dumps([pair.prompt, *answers], ensure_ascii=False)


def drop_duplicates(pairs: list[Pair], seen: set[str] | None = None) -> tuple[list[Pair], int]:
    """Keeps the first of each (prompt, answers) pair; `seen` carries keys across calls."""
    seen = set() if seen is None else seen
    kept = []
    for pair in pairs:
        key = pair_key(pair)
        if key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept, len(pairs) - len(kept)


def check_unique_ids(pairs: list[Pair]) -> None:
    first = {}
    for pair in pairs:
        if pair.id in first:
            raise DataError(f"{pair.source}: id {pair.id} also appears in {first[pair.id]}; ids must be unique")
        first[pair.id] = pair.source


def assign_folds(pairs: list[Pair], n_folds: int, seed: int) -> list[int]:
    """Fold of each pair, grouped by prompt (the same prompt never on both sides), balanced by row count and
    deterministic for a seed."""
    if n_folds < 2:
        raise DataError(f"n_folds must be at least 2, got {n_folds}")
    sizes = Counter(prompt_key(p) for p in pairs)
    groups = sorted(sizes)
    random.Random(seed).shuffle(groups)
    fold_of, load = {}, [0] * n_folds
    # largest groups first so that the greedy fill stays balanced; ties keep the shuffled order
    for key in sorted(groups, key=lambda k: -sizes[k]):
        fold = min(range(n_folds), key=lambda f: (load[f], f))
        fold_of[key] = fold
        load[fold] += sizes[key]
    return [fold_of[prompt_key(p)] for p in pairs]


@dataclass
class Split:
    """Training rows, held-out rows and what was done to get them."""

    train: list[Pair]
    heldout: list[Pair]
    folds: list[tuple[str, int]]  # (id, fold) of every row of the train files
    counts: dict[str, int]


def split_data(
    train_files: list[str],
    extra_files: list[str],
    n_folds: int,
    fold: int,
    seed: int,
    on_bad_row: str = "error",
    bad_rows: BadRows | None = None,
) -> Split:
    """Reads the train files, removes duplicates and splits them into folds grouped by prompt; `fold` is held out
    (-1: none). Extra files only add training rows: their duplicates and rows whose prompt is in the held-out fold
    are left out."""
    if not train_files:
        raise DataError("no training data: give --train_file")
    if not -1 <= fold < n_folds:
        raise DataError(f"fold must be -1 (no held-out fold) or between 0 and {n_folds - 1}, got {fold}")
    counts = Counter()
    labelled = []
    for path in train_files:
        pairs = read_pairs(path, on_bad_row, bad_rows, seed)
        unlabelled = next((p for p in pairs if p.label is None), None)
        if unlabelled is not None:
            raise DataError(f"{path}: no label columns ({', '.join(LABEL_COLUMNS)}); a training file needs labels")
        counts[f"rows in {path}"] = len(pairs)
        labelled += pairs
    check_unique_ids(labelled)
    seen: set[str] = set()
    labelled, counts["duplicates removed"] = drop_duplicates(labelled, seen)
    fold_ids = assign_folds(labelled, n_folds, seed)
    heldout = [p for p, f in zip(labelled, fold_ids) if f == fold]
    train = [p for p, f in zip(labelled, fold_ids) if f != fold]
    held_prompts = {prompt_key(p) for p in heldout}
    for path in extra_files:
        pairs = read_pairs(path, on_bad_row, bad_rows, seed)
        counts[f"rows in {path}"] = len(pairs)
        pairs, duplicates = drop_duplicates(pairs, seen)
        counts["duplicates removed"] += duplicates
        kept = [p for p in pairs if prompt_key(p) not in held_prompts]
        counts["extra rows left out (prompt in held-out fold)"] += len(pairs) - len(kept)
        train += kept
    counts["training rows"], counts["held-out rows"] = len(train), len(heldout)
    return Split(train, heldout, [(p.id, f) for p, f in zip(labelled, fold_ids)], dict(counts))
