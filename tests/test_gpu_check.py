"""bench/gpu_check.sh --cpu: every feature of the GPU check passes on the tiny models (so a feature broken on a CPU
fails this test), and the check's own parts report what is wrong: probabilities that moved or are not a
distribution, a feature that fails or raises (recorded, and the next one still runs), a request to the model hub."""

import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from bench.gpu_check import Checker, Failure, HubRecorder, Record, compare, read_probabilities
from conftest import ROOT, SCRIPT_TIMEOUT, write_rows

FEATURES = {"data", "llama", "gemma2", "loss_token", "loss_label", "tta", "ensemble", "offline", "swap_augment",
            "distill", "label_head", "chat_template", "two_way", "fold_all", "merge_adapter"}


@pytest.mark.slow
def test_the_cpu_mode_passes_every_feature(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--cpu", "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True,
        text=True, timeout=SCRIPT_TIMEOUT, env={**os.environ, "OUT": str(out), "PYTHON": sys.executable})
    record = json.loads((out / "gpu_check.json").read_text())
    entries = {e["feature"]: e for e in record["features"]}
    assert set(entries) == FEATURES
    failed = {name: e["reason"] for name, e in entries.items() if e["status"] != "pass"}
    assert not failed, f"{failed}\n{result.stdout[-3000:]}"
    assert result.returncode == 0, result.stderr[-3000:]
    assert record["mode"] == "cpu" and record["versions"]["unsloth"] and record["seconds"] > 0
    assert all(e["seconds"] > 0 for e in entries.values())
    log = (out / "gpu_check.log").read_text()
    assert all(f"==== {name}\n" in log for name in FEATURES)
    assert "max |difference|" in entries["loss_token"]["reason"]


def test_compare_names_the_row_that_moved():
    expected = {"a": [0.5, 0.3, 0.2], "b": [0.1, 0.1, 0.8]}
    assert "max |difference| 0 " in compare(dict(expected), expected, 1e-5, "same")
    moved = {**expected, "b": [0.1, 0.1 + 2e-5, 0.8 - 2e-5]}
    with pytest.raises(Failure, match=r"^moved: id b: .* max \|difference\| 2e-05 > tolerance 1e-05$"):
        compare(moved, expected, 1e-5, "moved")
    with pytest.raises(Failure, match="id a: .* nan"):
        compare({**expected, "a": [float("nan"), 0.3, 0.2]}, expected, 1e-5, "nan")
    with pytest.raises(Failure, match=r"ids differ: 1 missing \(e.g. \['b'\]\), 1 extra \(e.g. \['c'\]\)"):
        compare({"a": expected["a"], "c": expected["b"]}, expected, 1e-5, "ids")


def test_a_file_that_is_not_a_distribution_fails(tmp_path):
    header = ["id", "winner_model_a", "winner_model_b", "winner_tie"]
    good = {"id": "x", "winner_model_a": "0.5", "winner_model_b": "0.25", "winner_tie": "0.25"}
    path = write_rows(tmp_path / "good.csv", [good], header)
    assert read_probabilities(str(path), 3) == {"x": [0.5, 0.25, 0.25]}
    path = write_rows(tmp_path / "short.csv", [good, {**good, "id": "y", "winner_tie": "0.2"}], header)
    with pytest.raises(Failure, match=r"short.csv: id y: probabilities \[0.5, 0.25, 0.2\] are not a distribution"):
        read_probabilities(str(path), 3)
    with pytest.raises(Failure, match="expected id,winner_model_a,winner_model_b first and no other label column$"):
        read_probabilities(str(write_rows(tmp_path / "three.csv", [good], header)), 2)
    with pytest.raises(Failure, match="missing.csv: not written"):
        read_probabilities(str(tmp_path / "missing.csv"), 3)


def test_failures_are_recorded_and_the_next_features_still_run(tmp_path):
    hub = HubRecorder()
    record = Record(str(tmp_path / "gpu_check.json"))
    checker = Checker(record, str(tmp_path / "gpu_check.log"), hub=hub, console=io.StringIO())

    def broken():
        raise Failure("broken on purpose")

    def crashes():
        raise RuntimeError("a CUDA fault, say")

    def asks(path):
        def check():
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(hub.url + path)
            return "ran"
        return check

    assert not checker.run("broken", broken)
    assert not checker.run("crashes", crashes)
    assert not checker.run("after_broken", lambda: "ran", needs=("broken",))
    assert checker.run("fine", lambda: "all good")
    assert not checker.run("asks_the_hub", asks("/api/models/some/model"))
    assert checker.run("telemetry", asks("/api/telemetry/trl/other"))
    checker.deadline = 0  # long past
    assert not checker.run("late", lambda: "ran", needs_s=10)
    saved = {e["feature"]: e for e in json.loads((tmp_path / "gpu_check.json").read_text())["features"]}
    assert {name: e["status"] for name, e in saved.items()} == {
        "broken": "fail", "crashes": "fail", "after_broken": "fail", "fine": "pass", "asks_the_hub": "fail",
        "telemetry": "pass", "late": "skipped"}
    assert saved["broken"]["reason"] == "broken on purpose"
    assert saved["crashes"]["reason"] == "RuntimeError: a CUDA fault, say"
    assert saved["after_broken"]["reason"] == "needs broken, which did not pass"
    assert saved["asks_the_hub"]["reason"] == "asked the model hub 1 times, e.g. ['GET /api/models/some/model']"
    assert saved["telemetry"]["reason"] == "ran; 1 background requests to the hub (GET /api/telemetry/trl/other)"
    assert saved["late"]["reason"].startswith("deadline: ")
    assert "Traceback" in (tmp_path / "gpu_check.log").read_text()  # the crash's traceback is in the log
    hub.server.shutdown()
