"""`train_unsloth.py --dry_run`: the table of what the data looks like under the tokenizer and budget, the length
histogram, and the record of skipped rows; nothing is trained."""

import csv
import re

from conftest import check, run_cli
from test_formats import arena, hh, write_rows


def read_table(stdout):
    """{name: [numbers]} for the lines of the table that end in numbers ("  name   1500  100.0%")."""
    rows = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"\s*(.*?)((?:\s+\d+(?:\.\d+)?%?)+)", line)
        if match:
            rows[match[1]] = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", match[2])]
    return rows


def test_dry_run_prints_the_table_and_trains_nothing(tiny_model, demo_data, tmp_path):
    run = tmp_path / "run"
    data = demo_data / "train.csv"
    result = check(run_cli("train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model,
                              "--train_file", data, "--dry_run", "--output_dir", run))
    table = read_table(result.stdout)
    rows = table["rows read from " + str(data)][0] - table["duplicates removed"][0]
    assert rows > 1400 and table[str(data)] == [rows, 100.0]
    classes = [table[name] for name in ("A", "B", "tie")]
    assert sum(count for count, _ in classes) == rows and all(20 < share < 50 for _, share in classes)
    assert sum(table[name][0] for name in ("1", "2", "3", "4-5", "6-10", "11+")) == rows
    percentiles = [table[name] for name in ("p50", "p90", "p95", "p99", "max")]
    for needed, fitted in percentiles:
        assert 0 < fitted <= min(needed, 512)
    assert [p[0] for p in percentiles] == sorted(p[0] for p in percentiles)
    for name in ("rows that lost earliest turns", "rows with shortened texts"):
        count, share = table[name]
        assert 0 <= count <= rows and share == round(100 * count / rows, 1)
    assert table["training rows"][0] + table["held-out rows"][0] == rows
    assert sorted(p.name for p in run.iterdir()) == ["lengths.png"]  # no adapter, no checkpoints
    assert (run / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dry_run_with_several_files_and_skipped_rows_keeps_a_record(tiny_model, demo_data, tmp_path):
    with open(demo_data / "train.csv", newline="") as f:
        demo = list(csv.DictReader(f))[:200]
    demo[10]["response_a"] = '["unterminated'
    demo[20]["winner_tie"] = "1"  # now two winners
    first = write_rows(tmp_path / "a.csv", demo)
    long_rows = [arena(f"long-{k}", [f"question {k} {t} " + "word " * 60 for t in range(4)],
                       ["answer " * 80] * 4, ["reply " * 80] * 4) for k in range(10)]
    long_rows += [arena(f"huge-{k}", [f"q {k}"], ["very " * 3000], ["short"], (0, 1, 0)) for k in range(5)]
    long_rows.append(arena(demo[0]["id"], ["dup"], ["a"], ["b"]))  # an id the first file has
    second = write_rows(tmp_path / "b.jsonl", long_rows)
    extra = write_rows(tmp_path / "hh.jsonl", [hh(f"hh{k}", [(f"novel {k}", None)], "good", "bad") for k in range(30)])
    run = tmp_path / "run"
    result = check(run_cli(
        "train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model, "--train_file", first,
        "--train_file", second, "--extra_file", extra, "--max_length", "256", "--on_bad_row", "skip", "--dry_run",
        "--output_dir", run,
    ))
    table = read_table(result.stdout)
    assert table["bad rows skipped"] == [3]
    with open(run / "bad_rows.csv", newline="") as f:
        record = [(r["file"], r["row"], r["id"], r["column"]) for r in csv.DictReader(f)]
    assert record == [(first, "11", demo[10]["id"], "response_a"),
                      (first, "21", demo[20]["id"], "winner_model_a/winner_model_b/winner_tie"),
                      (second, "16", demo[0]["id"], "id")]
    assert f"skipped rows are listed in {run}/bad_rows.csv" in result.stdout
    # rows per source count what is trained or held out: read rows less the skipped and the duplicates
    assert table[first][0] + table[second][0] + table["duplicates removed"][0] == 198 + 15
    assert table[extra][0] == 30  # extra rows are never held out, and these share no prompt with the train files
    assert table["rows that lost earliest turns"][0] >= 10
    assert table["rows with shortened texts"][0] >= 5
    assert table["max"][1] <= 256 < table["max"][0]
    assert sorted(p.name for p in run.iterdir()) == ["bad_rows.csv", "lengths.png"]


def test_dry_run_counts_rows_and_tokens_per_language(tiny_model, tmp_path):
    # 12 languages with 13 down to 2 rows, and 3 rows without one: the table shows the 10 largest, then "other"
    names = [f"lang{k:02d}" for k in range(12)]
    rows = [arena(f"{name}-{i}", [f"question {name} {i}"], ["answer " * (5 + k)], ["reply"]) | {"language": name}
            for k, name in enumerate(names) for i in range(13 - k)]
    rows += [arena(f"none-{i}", [f"question none {i}"], ["answer"], ["reply"]) | {"language": None} for i in range(3)]
    data = write_rows(tmp_path / "train.jsonl", rows)
    result = check(run_cli("train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model,
                              "--train_file", data, "--dry_run", "--output_dir", tmp_path / "run"))
    table = read_table(result.stdout)
    assert "languages (top 10, then other)" in result.stdout
    shown = [name for name in names[:10] if name in table]
    assert shown == names[:10] and "lang10" not in table and "(none)" not in table
    assert table["other"][0] == 3 + 2 + 3  # lang10, lang11 and the rows without a language
    n = len(rows)
    for k, name in enumerate(names[:10]):
        count, share, p50, p90, longest = table[name]
        assert count == 13 - k and share == round(100 * count / n, 1) and p50 <= p90 <= longest
    assert table["lang09"][2] > table["lang00"][2]  # longer answers, more tokens


def test_dry_run_without_a_language_column_has_no_language_table(tiny_model, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", [arena(str(i), [f"q{i}"], ["a"], ["b"]) for i in range(20)])
    result = check(run_cli("train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model,
                              "--train_file", data, "--dry_run", "--output_dir", tmp_path / "run"))
    assert "languages" not in result.stdout and "rows per source" in result.stdout


def test_chat_template_without_one_in_the_tokenizer_stops_with_one_line(tiny_model, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", [arena(str(i), [f"q{i}"], ["a"], ["b"]) for i in range(20)])
    result = run_cli("train_unsloth.py", "--config", "configs/demo.yaml", "--model", tiny_model, "--train_file",
                        data, "--chat_template", "--dry_run", "--output_dir", tmp_path / "run")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tiny_model}: the tokenizer has no chat template, so --chat_template cannot be used")
