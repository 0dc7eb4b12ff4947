"""Property: with on_bad_row="skip", every input row is either loaded or recorded as bad, never both, never
neither; with "error", reading stops at the first bad row. Random rows, some corrupted in random ways, are written
as CSV or JSON Lines."""

import csv
import json
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arena.data import LABEL_COLUMNS, BadRows, DataError, read_pairs

TURN_COLUMNS = ("prompt", "response_a", "response_b")
CORRUPTIONS = ("bad json", "not a list", "not a string item", "empty cell", "not one-hot", "label not a number",
               "duplicate id", "missing cell", "broken line")
texts = st.one_of(st.none(), st.text(st.sampled_from('ab ,"\n\\{}[]é東😀\ud83d'), max_size=8))


@st.composite
def rows(draw):
    """(rows as dicts, corruption of each row or None); one row is always clean."""
    n = draw(st.integers(1, 12))
    kinds = draw(st.lists(st.one_of(st.none(), st.sampled_from(CORRUPTIONS)), min_size=n, max_size=n))
    kinds[draw(st.integers(0, n - 1))] = None
    out = []
    for i, kind in enumerate(kinds):
        label = draw(st.integers(0, 2))
        row = {"id": draw(st.sampled_from([str(1000 + i), ""])),
               **{c: draw(st.lists(texts, max_size=3)) for c in TURN_COLUMNS},
               **{c: int(k == label) for k, c in enumerate(LABEL_COLUMNS)}}
        column = draw(st.sampled_from(TURN_COLUMNS))
        if kind == "bad json":
            row[column] = json.dumps(row[column])[:-1]
        elif kind == "not a list":
            row[column] = draw(st.sampled_from([5, {"a": 1}, True]))
        elif kind == "not a string item":
            row[column] = [*row[column], draw(st.sampled_from([3, ["x"], {"t": "x"}]))]
        elif kind == "empty cell":
            row[column] = None
        elif kind == "not one-hot":
            row.update(zip(LABEL_COLUMNS, draw(st.sampled_from([(1, 1, 0), (0, 0, 0), (0.5, 0.5, 0), (2, 0, 0)]))))
        elif kind == "label not a number":
            row[draw(st.sampled_from(LABEL_COLUMNS))] = "win"
        elif kind == "duplicate id" and i == 0:
            kinds[i] = None
        out.append(row)
    for i, kind in enumerate(kinds):  # a copy of an earlier row's id (the fallback one where it is blank)
        if kind == "duplicate id":
            earlier = draw(st.integers(0, i - 1))
            out[i]["id"] = effective_id(out[earlier], earlier + 1)
    return out, kinds


def effective_id(row, number):
    return row["id"] or f"data-{number}"


def write(folder, fmt, rows, kinds, blank_lines):
    path = os.path.join(folder, f"data.{fmt}")
    with open(path, "w", newline="", encoding="utf-8") as f:
        if fmt == "csv":
            writer = csv.writer(f)
            writer.writerow(rows[0])
        for row, kind, blank in zip(rows, kinds, blank_lines):
            if blank:
                f.write("\n" if fmt == "jsonl" else "\r\n")
            if fmt == "jsonl":
                line = json.dumps(row)
                if kind == "missing cell":
                    line = json.dumps({k: v for k, v in row.items() if k != "response_b"})
                f.write((line[: len(line) // 2] if kind == "broken line" else line) + "\n")
            else:
                cells = ["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in row.values()]
                writer.writerow(cells[:-1] if kind in ("missing cell", "broken line") else cells)
    return path


@settings(max_examples=50, deadline=None)
@given(rows(), st.sampled_from(["csv", "jsonl"]), st.data())
def test_every_row_is_either_loaded_or_recorded(data_rows, fmt, data):
    rows, kinds = data_rows
    blank_lines = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    with tempfile.TemporaryDirectory() as folder:
        path = write(folder, fmt, rows, kinds, blank_lines)
        bad_rows = BadRows()
        pairs = read_pairs(path, on_bad_row="skip", bad_rows=bad_rows)

        # what the rules say: a corrupted row is bad, and so is a clean row whose id an earlier loaded row has
        expected_loaded, expected_bad = [], []
        for number, (row, kind) in enumerate(zip(rows, kinds), start=1):
            row_id = effective_id(row, number)
            if kind not in (None, "duplicate id") or row_id in expected_loaded:
                expected_bad.append(number)
            else:
                expected_loaded.append(row_id)

        reported = [number for _, number, _, _, _ in bad_rows.rows]
        assert [p.id for p in pairs] == expected_loaded
        assert reported == expected_bad  # each bad row once, in file order
        assert len(pairs) + len(reported) == len(rows)
        for _, number, row_id, _, problem in bad_rows.rows:
            assert row_id in ("", effective_id(rows[number - 1], number)) and problem and "\n" not in problem
        for pair in pairs:
            "".join(pair.prompt + pair.response_a + pair.response_b).encode("utf-8")  # surrogates repaired

        if expected_bad:
            with pytest.raises(DataError) as error:
                read_pairs(path)
            assert str(error.value).startswith(f"{path}: row {expected_bad[0]}")
        else:
            assert read_pairs(path) == pairs
