"""The Kaggle notebook (kaggle/submit.ipynb) executed as a user runs it, cell by cell in a real Jupyter kernel
(nbclient), with its parameters pointed at the demo: two processes write the submission `infer.py` writes in one,
and a missing input stops it at the check with one line each. The scoring command it builds for GPUs (one process
per GPU, float16 without bfloat16) is checked without a GPU."""

import importlib.metadata
import re
import sys

import nbclient
import nbformat
import numpy as np
import pytest

from conftest import ROOT, SCRIPT_TIMEOUT, check, read_probabilities, run_cli
from tools.kaggle_submit import Stop, Submission
from tools.offline_kit import INSTALL

NOTEBOOK = ROOT / "kaggle" / "submit.ipynb"


def run_notebook(folder, **parameters):
    """Executes the notebook in `folder` with `parameters` set after its parameters cell (as papermill does).
    Returns the executed notebook and the CellExecutionError that stopped it, if one did."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items())))
    client = nbclient.NotebookClient(nb, timeout=SCRIPT_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        return nb, e
    return nb, None


def cell_text(cell) -> str:
    """What a cell printed and raised, as the notebook shows it."""
    parts = []
    for output in cell.get("outputs", []):
        parts += [output.get("text", ""), output.get("data", {}).get("text/plain", ""),
                  "\n".join(output.get("traceback", []))]
    return "".join(parts)


def no_op_kit(folder):
    """A kit in the layout `make offline-kit` writes, with its install command, naming only packages this
    environment already has: the notebook's install cell runs pip as on Kaggle, and pip changes nothing."""
    folder.mkdir()
    (folder / "requirements.txt").write_text(f"numpy=={importlib.metadata.version('numpy')}\n")
    (folder / "requirements-unsloth.txt").write_text(f"pyyaml=={importlib.metadata.version('pyyaml')}\n")
    (folder / "INSTALL.txt").write_text(f"# a test kit; KIT is this folder\nKIT=.; {INSTALL}\n")
    return folder


@pytest.mark.slow
def test_the_notebook_on_two_processes_writes_what_infer_writes_in_one(trained_run, tiny_model, demo_data, tmp_path):
    test_file = demo_data / "test.csv"
    one = tmp_path / "one" / "submission.csv"
    check(run_cli("infer.py", "--adapter", trained_run, "--model", tiny_model, "--data_file", test_file,
                  "--output_file", one, "--tta"))
    output = tmp_path / "working" / "submission.csv"
    nb, error = run_notebook(
        tmp_path, KIT=str(no_op_kit(tmp_path / "kit")), CODE=str(ROOT), BASE=str(tiny_model), RUNS=[str(trained_run)],
        DATA_FILE=str(test_file), OUTPUT_FILE=str(output), WORK_DIR=str(tmp_path / "working" / "arena-pref"),
        TTA=True, GPUS=2)
    assert error is None, str(error)[-5000:]
    cells = {cell.get("id"): cell_text(cell) for cell in nb.cells}
    assert "install: KIT=.; pip install --no-index" in cells["install"]
    assert "scoring: 2 process(es), no GPU, dtype infer.py's default, TTA on" in cells["score"]
    assert "--multi_gpu --num_processes 2" in cells["score"]
    assert re.search(r"done: 60 rows in \d+ s \(0\.\d\d h\): \d+\.\d\d rows/s, 2 process\(es\)", cells["score"])
    assert (tmp_path / "working" / "arena-pref" / "infer.py").is_file()  # it ran from its copy of the code
    assert "winner_tie" in cells["submission"]  # the last cell shows the submission's head

    two, single = read_probabilities(output), read_probabilities(one)
    assert list(two) == list(single)  # every id, in the data's order
    for row_id, probs in two.items():
        np.testing.assert_allclose(probs, single[row_id], atol=1e-6, err_msg=row_id)


@pytest.mark.slow
def test_a_missing_input_stops_the_notebook_with_one_line_each(tmp_path):
    (tmp_path / "run-a").mkdir()
    nb, error = run_notebook(
        tmp_path, KIT=str(tmp_path), CODE=str(ROOT), BASE=str(tmp_path / "no-base"),
        RUNS=[str(tmp_path / "run-a"), str(tmp_path / "run-b")], DATA_FILE=str(tmp_path / "test.csv"),
        OUTPUT_FILE=str(tmp_path / "submission.csv"), WORK_DIR=None, TTA=False, GPUS=0)
    assert error is not None and error.ename == "Stop"
    cells = {cell.get("id"): cell for cell in nb.cells}
    assert cell_text(cells["check"]).splitlines() == [
        f"error: KIT: {tmp_path} holds no {name}: not a kit from `make offline-kit`"
        for name in ("INSTALL.txt", "requirements.txt", "requirements-unsloth.txt")
    ] + [
        f"error: BASE: {tmp_path / 'no-base'}: no such folder ({tmp_path} holds: run-a)",
        f"error: RUNS: {tmp_path / 'run-b'}: no such folder ({tmp_path} holds: run-a)",
        f"error: DATA_FILE: {tmp_path / 'test.csv'}: no such file ({tmp_path} holds: run-a)",
        "error: GPUS: 0 is not a number of processes (1 or more; None: one per GPU)",
    ]  # one line each, no traceback
    assert cells["install"].execution_count is None  # it stopped there


T4S = {"names": ["Tesla T4", "Tesla T4"], "bf16": False}
H100 = {"names": ["NVIDIA H100 80GB HBM3"], "bf16": True}
CPU = {"names": [], "bf16": True}


def test_one_process_per_gpu_and_float16_where_a_gpu_has_no_bfloat16():
    job = Submission(runs=["run"], data_file="test.csv", base="base")
    t4 = job.command(T4S)
    assert t4[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert t4[t4.index("--num_processes") + 1] == "2" and "--multi_gpu" in t4
    assert t4[t4.index("infer.py"):] == ["infer.py", "--adapter", "run", "--model", "base", "--data_file", "test.csv",
                                         "--output_file", "submission.csv", "--tta", "true", "--dtype", "float16"]
    assert job.command(H100)[1:] == ["infer.py", *t4[t4.index("infer.py") + 1 : -2]]  # one process, the run's dtype
    assert job.command(CPU)[1:] == job.command(H100)[1:]  # a CPU keeps infer.py's default dtype
    assert "--dtype" not in job.command({"names": ["A100"] * 2, "bf16": True})
    own = Submission(runs=["run"], data_file="test.csv", infer_args=["--dtype", "float32"], gpus=1)
    assert own.command(T4S)[-2:] == ["--dtype", "float32"] and "--num_processes" not in own.command(T4S)
    assert Submission(runs=["run"], data_file="test.csv", gpus=2).processes(CPU) == 2  # CPU processes, as tested
    with pytest.raises(Stop, match="GPUS: 3 processes asked for, this machine has 2 GPU"):
        Submission(runs=["run"], data_file="test.csv", gpus=3).command(T4S)


def test_the_time_on_paper_in_the_docs_is_what_tools_kaggle_time_prints():
    printed = check(run_cli("tools/kaggle_time.py")).stdout
    tables = [line for line in printed.splitlines() if line.startswith("|")]
    docs = (ROOT / "docs" / "kaggle.md").read_text().splitlines()
    assert len(tables) == 9 and [line for line in tables if line not in docs] == []
