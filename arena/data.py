"""Reading preference data into one record type, `Pair`, and splitting it into folds.

Formats: CSV, Parquet, JSON Lines (and .json holding one array of rows). Shapes:
- arena: `prompt`, `response_a`, `response_b` (JSON lists of turns, or native lists), optional `id` and the
  one-hot `winner_model_a`, `winner_model_b`, `winner_tie` (Kaggle train/test, the 33k set): three classes;
- two-way (WSDM Cup 2025): `prompt`, `response_a`, `response_b` as plain strings (one turn each), `winner` =
  `model_a` or `model_b`: two classes. A file with a `winner` column is two-way; an unlabelled file (neither label
  column) is two-way when its first row's `prompt` is a plain string, not a list of turns;
- HH-RLHF: `chosen`, `rejected` transcripts with "\\n\\nHuman: " / "\\n\\nAssistant: " turns;
- UltraFeedback: `prompt`, `chosen`, `rejected` where chosen/rejected are lists of {role, content} messages.
Pairwise (chosen/rejected) rows are mapped to A/B by a seeded random swap; they have no ties, so they join a
three-way or a two-way run (`Pair.classes` None); one run never mixes three-way and two-way files. A `language`
column, in any shape, is kept as `Pair.language` (the dry run counts rows and tokens per language).

Bad input raises `DataError` with one line naming file, row, column and problem; with `on_bad_row="skip"` the row
is skipped and recorded in `BadRows` instead, so nothing is dropped without a record. Row N is the N-th data row,
counted from 1 (the header and blank lines are not rows): pandas' `df.iloc[N - 1]`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from arena.errors import DataError
from arena.swap import swap_pair

LABEL_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")
ARENA_COLUMNS = ("prompt", "response_a", "response_b")
PAIRWISE_COLUMNS = ("chosen", "rejected")
CLASS_NAMES = ("A", "B", "tie")
WINNER_COLUMN = "winner"  # the two-way layout's label column
WINNERS = ("model_a", "model_b")  # its values, by class
LAYOUTS = {3: "three-way (winner_model_a, winner_model_b, winner_tie)", 2: "two-way (winner: model_a or model_b)"}


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
    language: str = ""  # the `language` column where the file has one
    classes: int | None = None  # the file's classes: 3 (arena), 2 (two-way), None (pairwise: no ties, fits either)

    @property
    def one_empty(self) -> bool:
        """Exactly one of the two answers is empty in every turn."""
        return (not any(self.response_a)) != (not any(self.response_b))

    @property
    def empty_side(self) -> int:
        """0 when A's answer is the empty one of a `one_empty` pair, 1 when B's, -1 when the pair is not one_empty."""
        return -1 if not self.one_empty else int(any(self.response_a))

    @property
    def identical(self) -> bool:
        return self.response_a == self.response_b

    def swapped(self) -> Pair:
        """The same battle with A and B exchanged (label 0 <-> 1, tie stays): `arena.swap.swap_pair`."""
        return swap_pair(self)


@dataclass
class BadRows:
    """Rows skipped under `on_bad_row="skip"`: (file, row, id, column, problem)."""

    rows: list[tuple[str, int, str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

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
        where = f"row {row}" + (f" (id {row_id})" if row_id else "") + (f", column {column}" if column else "")
        super().__init__(f"{path}: {where}: {problem}")


# ---------------------------------------------------------------------------------------------------- text cells


def repair_text(text: str) -> str:
    """Pairs up surrogate halves and replaces lone surrogates (invalid in UTF-8) with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def parse_list(value, expected: str) -> list:
    """A cell holding a list: JSON-encoded (CSV) or native (Parquet / JSON Lines)."""
    if value is None or value == "":
        raise ValueError(f"empty cell; expected {expected}")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON ({e.msg}: char {e.pos}); expected {expected}") from None
    if hasattr(value, "tolist"):  # numpy arrays
        value = value.tolist()
    if not isinstance(value, list):
        raise ValueError(f"expected {expected}, got {type(value).__name__}")
    return value


def text_or_empty(value, what: str) -> str:
    """A turn's text: `null` and "" are both "", lone surrogates are repaired."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got an item of type {type(value).__name__}")
    return repair_text(value)


def parse_turns(value) -> list[str]:
    """A cell of turns: a list of strings (or nulls)."""
    return [text_or_empty(turn, "a list of strings") for turn in parse_list(value, "a JSON list of strings")]


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


def parse_winner(value) -> int:
    """The two-way layout's `winner` cell -> 0 (model_a) or 1 (model_b)."""
    if value not in WINNERS:
        raise ValueError(f"winner {value!r} is not {' or '.join(WINNERS)}")
    return WINNERS.index(value)


def pad_turns(*lists: list[str]) -> tuple[tuple[str, ...], ...]:
    """Unequal turn counts across prompt / A / B: pad the shorter lists with empty turns."""
    n = max(1, *(len(x) for x in lists))
    return tuple(tuple(x) + ("",) * (n - len(x)) for x in lists)


def split_transcript(text) -> tuple[list[str], list[str]]:
    """HH-RLHF transcript -> (human turns, assistant turns)."""
    if not isinstance(text, str):
        raise ValueError(f'expected a "Human: ... Assistant: ..." transcript, got {type(text).__name__}')
    humans, assistants = [], []
    for chunk in ("\n\n" + text.lstrip("\n")).split("\n\nHuman: ")[1:]:
        human, _, assistant = chunk.partition("\n\nAssistant: ")
        humans.append(repair_text(human))
        assistants.append(repair_text(assistant))
    if not humans:
        raise ValueError('no "Human: " turn found')
    return humans, assistants


MESSAGES = "a list of {role, content} messages"


def parse_messages(value) -> list[tuple[str, str]]:
    """[{role, content}, ...] (JSON or native) -> [(role, text), ...]."""
    messages = []
    for message in parse_list(value, MESSAGES):
        if not isinstance(message, dict):
            raise ValueError(f"expected {MESSAGES}, got an item of type {type(message).__name__}")
        messages.append((message.get("role"), text_or_empty(message.get("content"), "text as a message's content")))
    return messages


def prompt_messages(value) -> list[tuple[str, str]]:
    """UltraFeedback's `prompt` column: a message list (trl's conversational format) or the user's text."""
    if isinstance(value, str):
        try:
            return parse_messages(value)
        except ValueError:
            return [("user", repair_text(value))]
    return parse_messages(value) if value is not None else []


def split_messages(messages: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Messages -> (user turns, assistant turns); consecutive assistant messages join one turn, system
    messages are left out."""
    if not any(role == "user" for role, _ in messages):
        raise ValueError("no user message found")
    users, assistants = [], []
    for role, content in messages:
        if role == "user":
            users.append(content)
            assistants.append("")
        elif role == "assistant":
            if not assistants:
                users.append("")
                assistants.append("")
            assistants[-1] += content
    return users, assistants


# ---------------------------------------------------------------------------------------------------- files


class _BrokenRow(dict):
    """A row the file format itself could not parse."""

    def __init__(self, problem: str):
        super().__init__()
        self.problem = problem


def read_table(path: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """(columns, rows) of a file; rows are (row number, dict), row 1 being the first data row (the header is not
    counted); a row the format could not parse is a `_BrokenRow`."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected a .csv, .parquet or .jsonl file")
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty")
    ext = os.path.splitext(path)[1].lower()
    readers = {".csv": _csv_table, ".jsonl": _json_table, ".json": _json_table, ".parquet": _parquet_table,
               ".pq": _parquet_table}
    if ext not in readers:
        raise DataError(f"{path}: unknown file type {ext!r}; use .csv, .parquet or .jsonl")
    try:
        return readers[ext](path)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _open_text(path: str):
    # surrogatepass: lone surrogates written as UTF-8 bytes (as Python writes them) are read, then repaired
    return open(path, encoding="utf-8-sig", errors="surrogatepass", newline="")


def _not_utf8(path: str) -> DataError:
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8", "surrogatepass")
        return DataError(f"{path}: not UTF-8 text")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return DataError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); save it as UTF-8")


def _csv_table(path: str):
    csv.field_size_limit(1 << 30)
    f = _open_text(path)
    reader = csv.reader(f, strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: file is empty")
    except csv.Error as e:
        f.close()
        raise DataError(f"{path}: malformed CSV header ({e})") from None
    except BaseException:
        f.close()
        raise
    return header, _csv_rows(path, f, reader, header)


def _csv_rows(path: str, f, reader, header: list[str]):
    """Blank lines are not rows (as in pandas): row N is the N-th record after the header."""
    i, last_line = 0, reader.line_num
    with f:
        while True:
            try:
                values = next(reader, None)
            except csv.Error as e:
                # broken quoting: where the next row starts is unknown, so no later row can be trusted
                raise DataError(f"{path}: row {i + 1} (from line {last_line + 1}): malformed CSV ({e})") from None
            except UnicodeDecodeError:
                raise _not_utf8(path) from None
            if values is None:
                return
            first_line, last_line = last_line + 1, reader.line_num
            if not values:
                continue
            i += 1
            if len(values) == len(header):
                yield i, dict(zip(header, values))
            else:
                lines = f"line {last_line}" if first_line == last_line else f"lines {first_line}-{last_line}"
                yield i, _BrokenRow(f"has {len(values)} fields, the header has {len(header)} ({lines})")


def _json_table(path: str):
    """JSON Lines (one object per line), or a .json file holding one array of objects."""
    with _open_text(path) as f:
        text = f.read()
    if path.lower().endswith(".json") and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e.msg}: line {e.lineno}, column {e.colno})") from None
        rows = [(i, item if isinstance(item, dict) else _BrokenRow("item is not a JSON object"))
                for i, item in enumerate(items, start=1)]
    else:
        lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
        rows = [(i, _json_line(line, n)) for i, (n, line) in enumerate(lines, start=1)]
    columns = {}
    for _, row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns), iter(rows)


def _json_line(line: str, n: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return _BrokenRow(f"invalid JSON on line {n} ({e.msg}: char {e.pos})")
    return row if isinstance(row, dict) else _BrokenRow(f"line {n} is not a JSON object")


def _parquet_table(path: str):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read Parquet ({str(e).splitlines()[0]})") from None
    rows = (row for batch in table.to_batches() for row in batch.to_pylist())
    return table.column_names, enumerate(rows, start=1)


def detect_shape(path: str, columns, first_row: dict) -> tuple[str, bool]:
    """The file's shape ("arena", "two-way", "hh-rlhf" or "ultrafeedback") and whether it has labels. An unlabelled
    file of the arena columns is two-way when `first_row`'s prompt is a plain string rather than a list of turns."""
    columns = set(columns)
    present = [c for c in LABEL_COLUMNS if c in columns]
    if present and len(present) < len(LABEL_COLUMNS):
        missing = [c for c in LABEL_COLUMNS if c not in columns]
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(present)})")
    if set(ARENA_COLUMNS) <= columns:
        if present:
            return "arena", True
        if WINNER_COLUMN in columns:
            return "two-way", True
        return ("arena" if is_turn_list(first_row.get("prompt")) else "two-way"), False
    if set(PAIRWISE_COLUMNS) <= columns:
        return ("ultrafeedback" if "prompt" in columns else "hh-rlhf"), False
    missing = [c for c in ARENA_COLUMNS if c not in columns]
    raise DataError(
        f"{path}: missing column(s) {', '.join(missing)}; expected the arena columns "
        f"{', '.join(ARENA_COLUMNS)} or the pairwise columns {', '.join(PAIRWISE_COLUMNS)}"
    )


def is_turn_list(value) -> bool:
    """A prompt cell of the arena layout: a native list, text that reads as a JSON list ("[..."), or empty (which
    the arena layout then reports)."""
    if isinstance(value, str):
        return value.lstrip().startswith("[") or not value.strip()
    return True


def read_pairs(
    path: str,
    on_bad_row: str = "error",
    bad_rows: BadRows | None = None,
    seed: int = 0,
    seen_ids: dict[str, tuple[str, int]] | None = None,
) -> list[Pair]:
    """Reads one file into Pairs. `on_bad_row`: "error" stops at the first bad row, "skip" records it in
    `bad_rows` and goes on. File-level problems (missing file, unknown shape, no rows) always stop. `seen_ids`
    ({id: (file, row)}) carries ids across files that must not share one."""
    if on_bad_row not in ("error", "skip"):
        raise DataError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    bad_rows = bad_rows if bad_rows is not None else BadRows()
    seen_ids = {} if seen_ids is None else seen_ids
    columns, rows = read_table(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    pairs, n_rows, shape, labelled = [], 0, None, False
    for i, row in rows:
        n_rows += 1
        row_id = ""
        try:
            if isinstance(row, _BrokenRow):
                raise RowError(path, i, "", "", row.problem)
            if shape is None:  # checked at the first readable row: a file of only broken rows has no columns
                shape, labelled = detect_shape(path, columns, row)
            row_id = repair_text(str(row["id"])) if row.get("id") not in (None, "") else f"{stem}-{i}"
            pair = _make_pair(path, i, row_id, row, shape, labelled, seed)
            if row.get("language") is not None:
                if not isinstance(row["language"], str):
                    raise RowError(path, i, row_id, "language", f"expected text, got {type(row['language']).__name__}")
                pair = replace(pair, language=repair_text(row["language"]).strip())
            if row_id in seen_ids:
                first_path, first_row = seen_ids[row_id]
                where = f"row {first_row}" if first_path == path else f"{first_path} row {first_row}"
                raise RowError(path, i, row_id, "id", f"duplicate id (first seen on {where})")
            seen_ids[row_id] = (path, i)
            pairs.append(pair)
        except RowError as e:
            if on_bad_row == "error":
                raise
            bad_rows.add(e)
    if n_rows == 0:
        raise DataError(f"{path}: no data rows")
    return pairs


def _make_pair(path: str, i: int, row_id: str, row: dict, shape: str, labelled: bool, seed: int) -> Pair:
    column = ""
    try:
        if shape == "arena":
            turns = []
            for column in ARENA_COLUMNS:
                turns.append(parse_turns(row[column]))
            column = "/".join(LABEL_COLUMNS)
            label = parse_label(row) if labelled else None
            prompt, a, b = pad_turns(*turns)
            return Pair(row_id, prompt, a, b, label, path, classes=3)
        if shape == "two-way":
            texts = []
            for column in ARENA_COLUMNS:
                texts.append((text_or_empty(row[column], "text (one turn per cell in the two-way layout)"),))
            column = WINNER_COLUMN
            label = parse_winner(row[WINNER_COLUMN]) if labelled else None
            return Pair(row_id, *texts, label, path, classes=2)
        sides = []
        if shape == "hh-rlhf":
            for column in PAIRWISE_COLUMNS:
                sides.append(split_transcript(row[column]))
        else:
            column = "prompt"
            prompt = prompt_messages(row["prompt"])
            for column in PAIRWISE_COLUMNS:
                messages = parse_messages(row[column])
                if not any(role == "user" for role, _ in messages):  # trl's format: the prompt is its own column
                    messages = prompt + messages
                sides.append(split_messages(messages))
        (prompt, chosen), (prompt_r, rejected) = sides
        prompt, chosen, rejected = pad_turns(max(prompt, prompt_r, key=len), chosen, rejected)
        if chosen_goes_to_b(seed, row_id):
            return Pair(row_id, prompt, rejected, chosen, 1, path)
        return Pair(row_id, prompt, chosen, rejected, 0, path)
    except KeyError as e:  # a JSON Lines row without a column other rows have
        raise RowError(path, i, row_id, e.args[0], "column missing in this row") from None
    except (ValueError, TypeError, AttributeError) as e:
        raise RowError(path, i, row_id, column, str(e).splitlines()[0] or type(e).__name__) from None


def chosen_goes_to_b(seed: int, row_id: str) -> bool:
    """The seeded, per-row coin flip that maps a chosen/rejected pair to A/B."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return digest[0] & 1 == 1


# ---------------------------------------------------------------------------------------------------- combining


def prompt_key(pair: Pair) -> str:
    return json.dumps(pair.prompt, ensure_ascii=False)


def pair_key(pair: Pair) -> bytes:
    """Same prompt and the same two answers, in either order (a digest: the texts can be long)."""
    answers = sorted([json.dumps(pair.response_a, ensure_ascii=False), json.dumps(pair.response_b, ensure_ascii=False)])
    return hashlib.blake2b(json.dumps([pair.prompt, *answers], ensure_ascii=False).encode()).digest()


def drop_duplicates(pairs: list[Pair], seen: set[bytes] | None = None) -> tuple[list[Pair], int]:
    """Keeps the first of each (prompt, answers) pair; `seen` carries keys across calls."""
    seen = set() if seen is None else seen
    kept = []
    for pair in pairs:
        key = pair_key(pair)
        if key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept, len(pairs) - len(kept)


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
    bad_rows = BadRows() if bad_rows is None else bad_rows
    counts = Counter()
    labelled, seen_ids = [], {}  # ids are unique across the train files (folds.csv and oof.csv go by id)
    for path in train_files:
        labelled += read_labelled(path, on_bad_row, bad_rows, seed, seen_ids, counts)
    extras = [read_labelled(path, on_bad_row, bad_rows, seed, {}, counts) for path in extra_files]
    task_classes(labelled + [p for pairs in extras for p in pairs])
    seen: set[bytes] = set()
    labelled, counts["duplicates removed"] = drop_duplicates(labelled, seen)
    fold_ids = assign_folds(labelled, n_folds, seed)
    heldout = [p for p, f in zip(labelled, fold_ids) if f == fold]
    train = [p for p, f in zip(labelled, fold_ids) if f != fold]
    held_prompts = {prompt_key(p) for p in heldout}
    counts["extra rows left out (prompt in held-out fold)"] = 0
    for pairs in extras:
        pairs, duplicates = drop_duplicates(pairs, seen)
        counts["duplicates removed"] += duplicates
        kept = [p for p in pairs if prompt_key(p) not in held_prompts]
        counts["extra rows left out (prompt in held-out fold)"] += len(pairs) - len(kept)
        train += kept
    if not train:
        raise DataError("no training rows left" + (f" ({len(bad_rows)} bad rows skipped)" if bad_rows else ""))
    counts["training rows"], counts["held-out rows"] = len(train), len(heldout)
    if on_bad_row == "skip":
        counts["bad rows skipped"] = len(bad_rows)
    return Split(train, heldout, [(p.id, f) for p, f in zip(labelled, fold_ids)], dict(counts))


def read_labelled(
    path: str, on_bad_row: str, bad_rows: BadRows, seed: int, seen_ids: dict, counts: Counter
) -> list[Pair]:
    """read_pairs for a training file: it must have labels; its row count goes to `counts`."""
    pairs = read_pairs(path, on_bad_row, bad_rows, seed, seen_ids)
    if any(p.label is None for p in pairs):
        raise DataError(f"{path}: no label columns ({', '.join(LABEL_COLUMNS)}, or {WINNER_COLUMN}); "
                        "a training file needs labels")
    counts[f"rows read from {path}"] = len(pairs)
    return pairs


def task_classes(pairs: list[Pair]) -> int | None:
    """The number of classes of the pairs' files: 3 (three-way), 2 (two-way), None when they are all pairwise
    (no ties: they fit either). Three-way and two-way files together stop with an error naming one of each."""
    first_of = {}
    for pair in pairs:
        if pair.classes is not None:
            first_of.setdefault(pair.classes, pair.source)
    if len(first_of) > 1:
        raise DataError(
            f"{first_of[2]} is a {LAYOUTS[2]} file and {first_of[3]} a {LAYOUTS[3]} file; one run takes one kind. To "
            f"mix them, convert the three-way file to the two-way layout (a {WINNER_COLUMN} column of "
            f"{' or '.join(WINNERS)}, its ties left out)"
        )
    return next(iter(first_of), None)


def check_label_count(pairs: list[Pair], labels) -> None:
    """The labels must be as many as the data's classes (`task_classes`): 3 for three-way files, 2 for two-way."""
    classes = task_classes(pairs)
    if classes is not None and classes != len(labels):
        path = next(p.source for p in pairs if p.classes == classes)
        example = "--labels ' A' ' B'" if classes == 2 else "--labels ' A' ' B' ' Tie'"
        raise DataError(f"{path}: a {LAYOUTS[classes]} file needs {classes} labels, got {len(labels)} "
                        f"({list(labels)!r}); give {example}")
