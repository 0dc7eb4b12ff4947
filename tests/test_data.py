"""Reading arena data: the Kaggle quirks, folds grouped by prompt, and one-line errors for bad input."""

import csv
import json

import pytest

from arena.data import DataError, Pair, assign_folds, prompt_key, read_pairs, split_data
from conftest import run_cli

HEADER = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"]


def write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def row(i, prompt, a, b, label=(1, 0, 0)):
    return [i, "m1", "m2", json.dumps(prompt), json.dumps(a), json.dumps(b), *label]


def test_kaggle_quirks_null_turns_lone_surrogates_unequal_turns(tmp_path):
    path = tmp_path / "train.csv"
    with open(path, "w", encoding="utf-8") as f:  # written by hand: the JSON escapes must reach the file as-is
        f.write(",".join(HEADER) + "\n")
        f.write('1,m1,m2,"[""hi"", ""again""]","[null, ""\\ud83d oops""]","[""\\ud83d\\ude00 ok""]",0,0,1\n')
    (pair,) = read_pairs(str(path))
    assert pair.prompt == ("hi", "again")
    assert pair.response_a == ("", "\ufffd oops")  # null -> "", lone surrogate -> U+FFFD
    assert pair.response_b == ("😀 ok", "")  # a surrogate pair is joined; the missing turn is padded
    assert pair.label == 2
    pair.response_a[1].encode("utf-8")  # valid UTF-8 from here on


def test_flags_for_one_empty_answer_and_identical_answers():
    assert Pair("1", ("q",), ("",), ("b",)).one_empty
    assert not Pair("1", ("q",), ("",), ("",)).one_empty
    assert Pair("1", ("q",), ("same",), ("same",)).identical


def test_swapped_pair_exchanges_answers_and_label():
    pair = Pair("1", ("q",), ("a",), ("b",), 0)
    assert pair.swapped() == Pair("1", ("q",), ("b",), ("a",), 1)
    assert Pair("1", ("q",), ("a",), ("b",), 2).swapped().label == 2


def test_corrupt_json_cell_names_file_row_and_column(tmp_path):
    path = write_csv(tmp_path / "train.csv", [row(10, ["q"], ["a"], ["b"]), [11, "m1", "m2", '["q"]', '["a', '["b"]', 1, 0, 0]])
    with pytest.raises(DataError) as error:
        read_pairs(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: row 2 (id 11), column response_a: invalid JSON")
    assert "\n" not in message


def test_labels_that_are_not_one_hot(tmp_path):
    path = write_csv(tmp_path / "train.csv", [row(1, ["q"], ["a"], ["b"], (1, 1, 0))])
    with pytest.raises(DataError, match=r"row 1 \(id 1\), column winner_model_a/winner_model_b/winner_tie: labels are not one-hot \(1, 1, 0\)"):
        read_pairs(str(path))


def test_test_file_without_labels_reads_unlabelled(tmp_path):
    path = write_csv(tmp_path / "test.csv", [[5, '["q"]', '["a"]', '["b"]']], ["id", "prompt", "response_a", "response_b"])
    assert read_pairs(str(path))[0].label is None


def test_folds_group_prompts_and_are_deterministic():
    pairs = [Pair(str(i), (f"prompt {i % 37}",), (f"a{i}",), (f"b{i}",), i % 3) for i in range(400)]
    folds = assign_folds(pairs, 5, seed=3)
    fold_of_prompt = {}
    for pair, fold in zip(pairs, folds):
        assert fold_of_prompt.setdefault(prompt_key(pair), fold) == fold  # a prompt never spans two folds
    sizes = [folds.count(f) for f in range(5)]
    assert max(sizes) - min(sizes) <= 11  # balanced to within one prompt group
    assert assign_folds(pairs, 5, seed=3) == folds
    assert assign_folds(pairs, 5, seed=4) != folds


def test_split_holds_out_one_fold(tmp_path):
    rows = [row(i, [f"prompt {i % 50}"], [f"a{i}"], [f"b{i}"]) for i in range(300)]
    path = write_csv(tmp_path / "train.csv", rows)
    split = split_data([str(path)], [], n_folds=4, fold=1, seed=0)
    assert len(split.train) + len(split.heldout) == 300
    held = {prompt_key(p) for p in split.heldout}
    assert held and not held & {prompt_key(p) for p in split.train}
    assert {f for _, f in split.folds} == {0, 1, 2, 3}


def test_corrupt_csv_gives_one_line_error_from_the_command_line(tmp_path):
    path = write_csv(tmp_path / "train.csv", [row(1, ["q"], ["a"], ["b"]), [2, "m1", "m2", '["q"', '["a"]', '["b"]', 1, 0, 0]])
    result = run_cli("train_unsloth.py", "--model", "unused", "--train_file", path, "--output_dir", tmp_path / "run")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: {path}: row 2 (id 2), column prompt: invalid JSON (Expecting ',' delimiter: char 4); expected a JSON list of strings"
