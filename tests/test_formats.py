"""Every input format, the seeded A/B swap of pairwise data, combining files, and bad input: one line naming file,
row, column and problem (or, with on_bad_row="skip", a record of the row), from small files written here."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trl import TrlParser

from arena.config import DataArgs
from arena.data import LABEL_COLUMNS, BadRows, DataError, prompt_key, read_pairs, split_data
from arena.prompts import EMPTY_TEXT, Renderer, read_template
from conftest import check, run_cli


def write_rows(path, rows):
    """Writes dicts as .csv (list cells JSON-encoded, as in the Kaggle files), .jsonl, .json (one array) or
    .parquet; returns the path as a string."""
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def arena(row_id, prompt, a, b, label=(1, 0, 0), encode=False):
    cell = json.dumps if encode else list
    return {"id": row_id, "prompt": cell(prompt), "response_a": cell(a), "response_b": cell(b),
            **dict(zip(LABEL_COLUMNS, label))}


def hh(row_id, turns, good, bad):
    """An HH-RLHF row: `turns` are the shared (human, assistant) turns, then the last human turn's two answers."""
    head = "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in turns[:-1]) + f"\n\nHuman: {turns[-1][0]}"
    return {"id": row_id, "chosen": f"{head}\n\nAssistant: {good}", "rejected": f"{head}\n\nAssistant: {bad}"}


def messages(*texts):
    return [{"role": role, "content": text} for role, text in zip(["user", "assistant"] * len(texts), texts)]


def summary(pairs):
    return [(p.id, p.prompt, p.response_a, p.response_b, p.label) for p in pairs]


BATTLES = [
    ("1", ["hi", "again"], [None, "second"], ["😀 ok", ""], (0, 0, 1)),
    ("2", ["东京 is?"], ["a city"], ["a place"], (0, 1, 0)),
    ("3", ["q"], ["line 1\nline 2, with \"quotes\""], [None], (1, 0, 0)),
]
EXPECTED = [
    ("1", ("hi", "again"), ("", "second"), ("😀 ok", ""), 2),
    ("2", ("东京 is?",), ("a city",), ("a place",), 1),
    ("3", ("q",), ('line 1\nline 2, with "quotes"',), ("",), 0),
]


# ---------------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix,encode", [(".csv", True), (".jsonl", False), (".jsonl", True), (".json", False),
                                           (".parquet", False), (".parquet", True)])
def test_arena_rows_read_alike_from_every_format(tmp_path, suffix, encode):
    """Native lists (Parquet / JSON Lines) and JSON-encoded strings (the Kaggle CSVs) give the same pairs."""
    path = write_rows(tmp_path / f"train{suffix}", [arena(*b, encode=encode) for b in BATTLES])
    pairs = read_pairs(path)
    assert summary(pairs) == EXPECTED
    assert {p.source for p in pairs} == {path}


def test_unlabelled_jsonl_and_fallback_ids(tmp_path):
    rows = [{"prompt": ["q1"], "response_a": ["a"], "response_b": ["b"]}, {"prompt": ["q2"], "response_a": ["a"],
                                                                          "response_b": ["b"]}]
    pairs = read_pairs(write_rows(tmp_path / "test.jsonl", rows))
    assert [(p.id, p.label) for p in pairs] == [("test-1", None), ("test-2", None)]


def test_lone_surrogates_are_repaired_in_every_text_format(tmp_path):
    # JSON escapes of a lone surrogate (the Kaggle files), and the same surrogate as raw bytes (what Python
    # writes with errors="surrogatepass"): both read, both become U+FFFD
    for path in (tmp_path / "escaped.jsonl", tmp_path / "escaped.csv"):
        write_rows(path, [arena("1", ["q \ud83d"], ["\ud83d\ude00 pair"], ["b"])])
    raw = tmp_path / "raw.csv"
    raw.write_bytes('id,prompt,response_a,response_b\n1,"[""q \ud83d""]","[""a""]","[""b""]"\n'.encode("utf-8", "surrogatepass"))
    for path in (tmp_path / "escaped.jsonl", tmp_path / "escaped.csv", raw):
        (pair,) = read_pairs(str(path))
        assert pair.prompt == ("q \ufffd",)
        "".join(pair.prompt + pair.response_a + pair.response_b).encode("utf-8")
    assert read_pairs(str(tmp_path / "escaped.csv"))[0].response_a == ("😀 pair",)


def test_null_and_empty_turns_render_as_one_marker_and_unequal_turns_are_padded(tmp_path, local_tokenizer):
    rows = [arena("1", ["q", "q2"], [None, "a2"], ["b1"]), arena("2", ["q", "q2"], ["", "a2"], ["b1", ""])]
    nulls, empties = read_pairs(write_rows(tmp_path / "train.jsonl", rows))
    assert nulls.response_a == empties.response_a == ("", "a2")
    assert nulls.response_b == empties.response_b == ("b1", "")  # the missing turn is padded
    renderer = Renderer(local_tokenizer("chatml"), read_template("prompts/two_conversations.txt"))
    first, second = renderer.render_many([nulls, empties])
    assert first.ids == second.ids and first.turns == 2
    assert renderer.tokenizer.decode(first.ids).count(EMPTY_TEXT) == 2  # A's first turn, B's second


def test_one_empty_answer_and_identical_answers_are_flagged(tmp_path):
    rows = [arena("1", ["q"], [None], ["b"]), arena("2", ["q"], ["same"], ["same"]), arena("3", ["q"], ["a"], ["b"])]
    pairs = read_pairs(write_rows(tmp_path / "train.csv", rows))
    assert [(p.one_empty, p.identical) for p in pairs] == [(True, False), (False, True), (False, False)]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_hh_rlhf_transcripts(tmp_path, suffix):
    rows = [hh("x", [("hello", "hi there"), ("what is 2+2?", None)], "4", "5")]
    (pair,) = read_pairs(write_rows(tmp_path / f"hh{suffix}", rows))
    assert pair.prompt == ("hello", "what is 2+2?")
    chosen, rejected = ("hi there", "4"), ("hi there", "5")
    assert (pair.response_a, pair.response_b) == ((chosen, rejected) if pair.label == 0 else (rejected, chosen))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_ultrafeedback_message_lists(tmp_path, suffix):
    rows = [
        # UltraFeedback binarized: the prompt is repeated as the first message of both lists
        {"id": "h4", "prompt": "q", "chosen": messages("q", "good"), "rejected": messages("q", "bad")},
        # trl's conversational format: the prompt is a message list of its own, the answers assistant-only
        {"id": "trl", "prompt": messages("q"), "chosen": messages("q", "good")[1:], "rejected": messages("q", "bad")[1:]},
        {"id": "multi", "prompt": "q", "chosen": messages("q", "a1", "q2", "good"), "rejected": messages("q", "a1", "q2", "bad")},
    ]
    if suffix == ".parquet":  # a column holds one type: the prompt as text only
        rows[1]["prompt"] = "q"
    pairs = read_pairs(write_rows(tmp_path / f"uf{suffix}", rows))
    for pair in pairs:
        winner, loser = (pair.response_a, pair.response_b)[:: 1 if pair.label == 0 else -1]
        assert winner[-1] == "good" and loser[-1] == "bad"
    assert [p.prompt for p in pairs] == [("q",), ("q",), ("q", "q2")]
    assert pairs[2].response_a[0] == pairs[2].response_b[0] == "a1"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_language_column_is_read_in_every_shape(tmp_path, suffix):
    shapes = [
        [arena("1", ["q"], ["a"], ["b"]) | {"language": "English"}, arena("2", ["q2"], ["a"], ["b"]) | {"language": None}],
        [hh("1", [("q", None)], "a", "b") | {"language": " Русский "}, hh("2", [("q2", None)], "a", "b") | {"language": ""}],
        [{"id": "1", "prompt": "q", "chosen": messages("q", "a"), "rejected": messages("q", "b"), "language": "中文"},
         {"id": "2", "prompt": "q2", "chosen": messages("q2", "a"), "rejected": messages("q2", "b"), "language": None}],
    ]
    for k, rows in enumerate(shapes):
        pairs = read_pairs(write_rows(tmp_path / f"shape{k}{suffix}", rows))
        assert [p.language for p in pairs] == [["English", "Русский", "中文"][k], ""]
    assert read_pairs(write_rows(tmp_path / f"none{suffix}", [GOOD]))[0].language == ""


def test_pairwise_rows_are_swapped_by_a_seeded_coin_per_row_id(tmp_path):
    rows = [hh(f"r{i}", [(f"question {i}", None)], f"good {i}", f"bad {i}") for i in range(300)]
    path = write_rows(tmp_path / "hh.jsonl", rows)
    pairs = read_pairs(path, seed=0)
    assert read_pairs(path, seed=0) == pairs  # deterministic
    assert 100 < sum(p.label == 1 for p in pairs) < 200  # about half the chosen answers went to B
    for pair in pairs:  # the label follows the chosen answer
        winner = pair.response_a if pair.label == 0 else pair.response_b
        assert winner[0].startswith("good") and pair.label in (0, 1)
    # the coin is per row id: reordered rows keep their sides; another seed flips other rows
    reordered = read_pairs(write_rows(tmp_path / "reordered.jsonl", rows[::-1]), seed=0)
    assert {p.id: p.label for p in reordered} == {p.id: p.label for p in pairs}
    assert [p.label for p in read_pairs(path, seed=1)] != [p.label for p in pairs]


def test_train_file_can_be_repeated_or_listed_and_the_command_line_replaces_the_config():
    def parse(*argv):
        return TrlParser((DataArgs,)).parse_args_and_config(list(argv), fail_with_unknown_args=False)[0]

    args = parse("--train_file", "a.csv", "--train_file", "b.parquet", "c.jsonl", "--extra_file", "x.jsonl", "y.csv")
    assert args.train_file == ["a.csv", "b.parquet", "c.jsonl"] and args.extra_file == ["x.jsonl", "y.csv"]
    assert parse("--config", "configs/demo.yaml").train_file == ["data/demo/train.csv"]
    assert parse("--config", "configs/demo.yaml", "--train_file", "a.csv", "--train_file", "b.csv").train_file == ["a.csv", "b.csv"]


# ---------------------------------------------------------------------------------------------------- combining


def test_combined_train_and_extra_files_leave_out_leaks_and_duplicates(tmp_path):
    train_a = [arena(str(i), [f"prompt {i % 20}"], [f"a{i}"], [f"b{i}"]) for i in range(60)]
    train_b = [arena(str(100 + i), [f"prompt {i % 20}"], [f"c{i}"], [f"d{i}"], (0, 0, 1)) for i in range(40)]
    train_b.append(arena("200", ["prompt 3"], ["b3"], ["a3"]))  # row 3 of train_a with A and B exchanged
    paths = [write_rows(tmp_path / "a.csv", train_a), write_rows(tmp_path / "b.parquet", train_b)]
    # the 33k set: one row repeats a train row, and each train prompt appears once with new answers
    extra_arena = [arena("0", ["prompt 0"], ["a0"], ["b0"])]
    extra_arena += [arena(f"x{k}", [f"prompt {k}"], [f"new {k}"], [f"other {k}"]) for k in range(20)]
    extra_hh = [hh(None, [(f"novel {k}", None)], "good", "bad") for k in range(5)]
    extras = [write_rows(tmp_path / "33k.jsonl", extra_arena), write_rows(tmp_path / "hh.jsonl", extra_hh)]
    split = split_data(paths, extras, n_folds=4, fold=2, seed=0)

    held = {prompt_key(p) for p in split.heldout}
    leaked = sum(prompt_key(p) in held for p in read_pairs(extras[0])[1:])
    assert 0 < leaked < 20
    assert split.counts["duplicates removed"] == 2  # one in the train files, one in the extra file
    assert split.counts["extra rows left out (prompt in held-out fold)"] == leaked
    assert not held & {prompt_key(p) for p in split.train}
    assert len(split.train) + len(split.heldout) == 100 + 20 - leaked + 5
    assert split.counts["training rows"] == len(split.train)
    assert [split.counts[f"rows read from {p}"] for p in paths + extras] == [60, 41, 21, 5]
    assert len(split.folds) == 100 and len({row_id for row_id, _ in split.folds}) == 100


def test_ids_are_unique_across_train_files(tmp_path):
    a = write_rows(tmp_path / "a.csv", [arena("1", ["p"], ["a"], ["b"]), arena("2", ["p2"], ["a"], ["b"])])
    b = write_rows(tmp_path / "b.jsonl", [arena("3", ["p3"], ["a"], ["b"]), arena("2", ["p4"], ["a"], ["b"])])
    with pytest.raises(DataError) as error:
        split_data([a, b], [], n_folds=2, fold=0, seed=0)
    assert str(error.value) == f"{b}: row 2 (id 2), column id: duplicate id (first seen on {a} row 2)"
    bad_rows = BadRows()
    split = split_data([a, b], [], n_folds=2, fold=-1, seed=0, on_bad_row="skip", bad_rows=bad_rows)
    assert sorted(p.id for p in split.train) == ["1", "2", "3"]
    assert bad_rows.rows == [(b, 2, "2", "id", f"duplicate id (first seen on {a} row 2)")]
    assert split.counts["bad rows skipped"] == 1


def test_extra_files_need_labels(tmp_path):
    train = write_rows(tmp_path / "train.csv", [arena(str(i), [f"p{i}"], ["a"], ["b"]) for i in range(4)])
    test = write_rows(tmp_path / "test.jsonl", [{"prompt": ["q"], "response_a": ["a"], "response_b": ["b"]}])
    with pytest.raises(DataError, match=r"test.jsonl: no label columns"):
        split_data([train], [test], n_folds=2, fold=0, seed=0)


# ---------------------------------------------------------------------------------------------------- bad input

GOOD = arena("1", ["q"], ["a"], ["b"])
LABELS = "/".join(LABEL_COLUMNS)
HH_GOOD = hh("1", [("q", None)], "a", "b")
UF_GOOD = {"id": "1", "prompt": "q", "chosen": messages("q", "a"), "rejected": messages("q", "b")}

# case: (file type, row 1 (good), row 2 (bad), the record of row 2: id, column, problem)
ROW_CASES = {
    "malformed JSON in a CSV cell": (
        ".csv", GOOD, GOOD | {"id": "2", "response_a": '["a'},
        ("2", "response_a", "invalid JSON (Unterminated string starting at: char 1); expected a JSON list of strings")),
    "malformed JSON in a JSON Lines cell": (
        ".jsonl", GOOD, GOOD | {"id": "2", "prompt": "[1,"},
        ("2", "prompt", "invalid JSON (Expecting value: char 3); expected a JSON list of strings")),
    "a number instead of a list": (
        ".jsonl", GOOD, GOOD | {"id": "2", "response_b": 5},
        ("2", "response_b", "expected a JSON list of strings, got int")),
    "a number inside the list": (
        ".jsonl", GOOD, GOOD | {"id": "2", "response_b": ["b", 7]},
        ("2", "response_b", "expected a list of strings, got an item of type int")),
    "an empty cell": (
        ".csv", GOOD, GOOD | {"id": "2", "prompt": ""},
        ("2", "prompt", "empty cell; expected a JSON list of strings")),
    "labels that are not one-hot": (
        ".csv", GOOD, arena("2", ["q"], ["a"], ["b"], (1, 1, 0)),
        ("2", LABELS, "labels are not one-hot (1, 1, 0)")),
    "a label that is not a number": (
        ".jsonl", GOOD, arena("2", ["q"], ["a"], ["b"], ("yes", 0, 0)),
        ("2", LABELS, "winner_model_a: label 'yes' is not a number")),
    "a duplicate id": (
        ".parquet", GOOD, arena("1", ["other"], ["a"], ["b"]),
        ("1", "id", "duplicate id (first seen on row 1)")),
    "a column missing in one JSON Lines row": (
        ".jsonl", GOOD, {"id": "2", "prompt": ["q"], "response_a": ["a"]},
        ("2", "response_b", "column missing in this row")),
    "an HH-RLHF transcript without turns": (
        ".jsonl", HH_GOOD, HH_GOOD | {"id": "2", "chosen": "no turns"},
        ("2", "chosen", 'no "Human: " turn found')),
    "a language that is not text": (
        ".jsonl", GOOD | {"language": "English"}, GOOD | {"id": "2", "language": ["en"]},
        ("2", "language", "expected text, got list")),
    "an UltraFeedback list without a user message": (
        ".jsonl", UF_GOOD, UF_GOOD | {"id": "2", "prompt": None, "chosen": messages("q", "a")[1:]},
        ("2", "chosen", "no user message found")),
}


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_bad_row_stops_with_one_line_or_is_skipped_with_a_record(tmp_path, case):
    suffix, good, bad, (row_id, column, problem) = ROW_CASES[case]
    path = write_rows(tmp_path / f"train{suffix}", [good, bad])
    with pytest.raises(DataError) as error:
        read_pairs(path)
    assert str(error.value) == f"{path}: row 2 (id {row_id}), column {column}: {problem}"
    bad_rows = BadRows()
    pairs = read_pairs(path, on_bad_row="skip", bad_rows=bad_rows)
    assert [p.id for p in pairs] == ["1"]
    assert bad_rows.rows == [(path, 2, row_id, column, problem)]


def write_text(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return str(path)


HEADER = "id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n"
LINE = '1,"[""q""]","[""a""]","[""b""]",1,0,0\n'


def test_a_row_with_the_wrong_number_of_fields_names_its_lines(tmp_path):
    path = write_text(tmp_path / "train.csv", HEADER + LINE + '2,"[""q""]","[""multi\nline""]"\n' + LINE.replace("1,", "3,", 1))
    with pytest.raises(DataError) as error:
        read_pairs(path)
    assert str(error.value) == f"{path}: row 2: has 3 fields, the header has 7 (lines 3-4)"
    bad_rows = BadRows()
    assert [p.id for p in read_pairs(path, on_bad_row="skip", bad_rows=bad_rows)] == ["1", "3"]
    assert bad_rows.rows == [(path, 2, "", "", "has 3 fields, the header has 7 (lines 3-4)")]


def test_jsonl_lines_that_are_not_objects(tmp_path):
    path = write_text(tmp_path / "train.jsonl", json.dumps(GOOD) + '\n{"id": "2", \n\n[1, 2]\n')
    bad_rows = BadRows()
    assert [p.id for p in read_pairs(path, on_bad_row="skip", bad_rows=bad_rows)] == ["1"]
    assert [(row, problem) for _, row, _, _, problem in bad_rows.rows] == [
        (2, "invalid JSON on line 2 (Expecting property name enclosed in double quotes: char 12)"),
        (3, "line 4 is not a JSON object"),  # blank lines are not rows
    ]


FILE_CASES = {
    "missing column": (lambda d: write_text(d / "train.csv", "id,prompt,response_a\n1,\"[]\",\"[]\"\n"),
                       "missing column(s) response_b; expected the arena columns prompt, response_a, response_b "
                       "or the pairwise columns chosen, rejected"),
    "some label columns missing": (lambda d: write_rows(d / "train.jsonl", [{k: v for k, v in GOOD.items() if k != "winner_tie"}]),
                                   "missing column(s) winner_tie (found winner_model_a, winner_model_b)"),
    "empty file": (lambda d: write_text(d / "train.csv", ""), "file is empty"),
    "header only": (lambda d: write_text(d / "train.csv", HEADER), "no data rows"),
    "blank JSON Lines": (lambda d: write_text(d / "train.jsonl", "\n \n"), "no data rows"),
    "not UTF-8": (lambda d: write_text(d / "train.csv", HEADER + LINE.replace("q", "café"), "latin-1"),
                  "not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8"),
    "a folder": (lambda d: str(d), "is a folder, expected a .csv, .parquet or .jsonl file"),
    "no such file": (lambda d: str(d / "nothing.csv"), "no such file"),
    "unknown file type": (lambda d: write_text(d / "train.xlsx", "x"), "unknown file type '.xlsx'; use .csv, .parquet or .jsonl"),
    "broken CSV quoting": (lambda d: write_text(d / "train.csv", HEADER + LINE + '2,"[""q""]","[""a""]x,"[""b""]",1,0,0\n'),
                           "row 2 (from line 3): malformed CSV (',' expected after '\"')"),
    "an unclosed quote": (lambda d: write_text(d / "train.csv", HEADER + LINE + '2,"never closed\n3,x\n'),
                          "row 2 (from line 3): malformed CSV (unexpected end of data)"),
    "not Parquet": (lambda d: write_text(d / "train.parquet", "id,prompt\n"), "cannot read Parquet"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_file_stops_with_one_line_even_when_skipping_rows(tmp_path, case):
    make, problem = FILE_CASES[case]
    path = make(tmp_path)
    for on_bad_row in ("error", "skip"):
        with pytest.raises(DataError) as error:
            read_pairs(path, on_bad_row=on_bad_row)
        message = str(error.value)
        assert message.startswith(f"{path}: {problem}") and "\n" not in message


@pytest.mark.parametrize("case", ["missing column", "empty file", "not UTF-8", "a folder"])
def test_bad_input_from_the_command_line_is_one_line_and_a_nonzero_exit(tmp_path, case):
    make, problem = FILE_CASES[case]
    path = make(tmp_path)
    result = run_cli("train_unsloth.py", "--model", "unused", "--train_file", path, "--output_dir", tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}: {problem}")


def test_infer_skips_bad_rows_with_a_record_beside_the_output(tmp_path, tiny_model):
    rows = [arena(str(i), [f"q{i}"], ["a"], ["b"]) for i in range(1, 6)]
    rows[2]["response_a"] = '["a'
    rows[4] = arena("1", ["again"], ["a"], ["b"])
    path = write_rows(tmp_path / "test.csv", rows)
    out = tmp_path / "pred" / "submission.csv"
    result = check(run_cli("infer.py", "--model", tiny_model, "--data_file", path, "--output_file", out,
                              "--max_length", "512", "--on_bad_row", "skip"))
    record = tmp_path / "pred" / "submission.bad_rows.csv"
    assert f"skipped 2 bad rows, listed in {record}" in result.stdout
    with open(record, newline="") as f:
        assert [(r["row"], r["id"], r["column"]) for r in csv.DictReader(f)] == [("3", "3", "response_a"), ("5", "1", "id")]
    with open(out, newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["1", "2", "4"]

