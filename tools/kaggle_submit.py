"""A Kaggle submission in three steps, for the notebook `kaggle/submit.ipynb` (and a shell): check that every input is
there (one line for each that is not), install the offline wheel kit, then score with one process per GPU and write
the submission, printing the elapsed time and rows/s.

    python tools/kaggle_submit.py --run /kaggle/input/arena-pref-run --base /kaggle/input/llama-3-8b-bnb-4bit \\
        --data_file /kaggle/input/lmsys-chatbot-arena/test.csv --output_file /kaggle/working/submission.csv \\
        --kit /kaggle/input/arena-pref-kit --work_dir /kaggle/working/arena-pref --tta

Scoring is `infer.py` itself: plain `python infer.py` for one process, `accelerate launch --multi_gpu` for several
(each process loads the model on its own GPU, the rows are split by token count and gathered: docs/multi-gpu.md).
On a GPU without native bfloat16 (compute capability below 8.0: a T4, a P100) it adds `--dtype float16`; on a CPU
the dtype stays infer.py's default. Only the standard library is imported here, so the check runs before the kit is
installed; torch is asked about the GPUs in a child process, which leaves no CUDA context in this one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the kit's own files (tools/offline_kit.py writes them): INSTALL.txt is the install command, run as it is
KIT_FILES = ("INSTALL.txt", "requirements.txt", "requirements-unsloth.txt")
# not copied into the work folder: they are not needed to score, and may be large
NOT_COPIED = (".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".hypothesis")
PROBE = """import json, torch
n = torch.cuda.device_count()
print(json.dumps({"names": [torch.cuda.get_device_name(i) for i in range(n)],
                  "bf16": all(torch.cuda.get_device_capability(i) >= (8, 0) for i in range(n))}))"""


class Stop(Exception):
    """A usage error: its lines are the whole message. In a notebook only they are shown (IPython's
    `_render_traceback_`), from a shell they are printed by sys.exit."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


@dataclass
class Submission:
    runs: list[str]  # run folders from train_unsloth.py (several: an ensemble)
    data_file: str
    output_file: str = "submission.csv"
    base: str | None = None  # a local copy of the runs' base model (None: the base named in adapter_config.json)
    kit: str | None = None  # the offline wheel kit (`make offline-kit`); None: install nothing
    code: str = ROOT  # this project
    work_dir: str | None = None  # the code is copied there and run from there (None: run in `code`)
    tta: bool = True
    gpus: int | None = None  # processes: None, one per GPU (one on a machine without a GPU)
    infer_args: list[str] = field(default_factory=list)  # more infer.py flags

    def check(self) -> None:
        """Every input is there, or Stop with one line for each that is not. Makes the paths absolute."""
        self.runs = [self.runs] if isinstance(self.runs, str) else list(self.runs)
        missing = []
        if self.kit:
            missing += [f"KIT: {where(self.kit)}"] if not os.path.isdir(self.kit) else [
                f"KIT: {self.kit} holds no {name}: not a kit from `make offline-kit`"
                for name in KIT_FILES if not os.path.isfile(os.path.join(self.kit, name))]
        if not os.path.isfile(os.path.join(self.code, "infer.py")):
            missing.append(f"CODE: {self.code} holds no infer.py: not a checkout of this project"
                           if os.path.isdir(self.code) else f"CODE: {where(self.code)}")
        if self.base and not os.path.isdir(self.base):
            missing.append(f"BASE: {where(self.base)}")
        if not self.runs:
            missing.append("RUNS: no run folder given")
        missing += [f"RUNS: {where(run)}" for run in self.runs if not os.path.isdir(run)]
        if not os.path.isfile(self.data_file):
            missing.append(f"DATA_FILE: {where(self.data_file, 'file')}")
        if self.gpus is not None and (not isinstance(self.gpus, int) or self.gpus < 1):
            missing.append(f"GPUS: {self.gpus!r} is not a number of processes (1 or more; None: one per GPU)")
        if missing:
            raise Stop("\n".join(f"error: {line}" for line in missing))
        self.runs = [os.path.abspath(run) for run in self.runs]
        for name in ("data_file", "output_file", "base", "kit", "code", "work_dir"):  # the scoring runs elsewhere
            if getattr(self, name):
                setattr(self, name, os.path.abspath(getattr(self, name)))
        print(f"inputs: {len(self.runs)} run folder(s), data {self.data_file}"
              + (f", base {self.base}" if self.base else "") + (f", kit {self.kit}" if self.kit else ""))

    def install(self) -> None:
        """The kit's own install command (its INSTALL.txt: pip, no index, the kit's wheels only), with this Python's
        pip. Nothing without a kit."""
        if not self.kit:
            print("install: no kit given, nothing installed")
            return
        with open(os.path.join(self.kit, "INSTALL.txt"), encoding="utf-8") as f:
            command = [line for line in f.read().splitlines() if line.strip() and not line.startswith("#")][-1]
        print(f"install: {command}  (in {self.kit})", flush=True)
        shell = f'pip() {{ "$ARENA_PYTHON" -m pip "$@"; }}; {command}'
        status = subprocess.run(["bash", "-c", shell], cwd=self.kit,
                                env={**os.environ, "ARENA_PYTHON": sys.executable}).returncode
        if status:
            raise Stop(f"error: the kit's install stopped (exit status {status}); pip's message is above")

    def processes(self, gpus: dict) -> int:
        """`gpus` processes, default one per GPU (probe_gpus) and one without a GPU; never more than the GPUs."""
        processes = self.gpus or max(len(gpus["names"]), 1)
        if gpus["names"] and processes > len(gpus["names"]):
            raise Stop(f"error: GPUS: {processes} processes asked for, this machine has {len(gpus['names'])} GPU(s)")
        return processes

    def dtype(self, gpus: dict) -> str | None:
        """float16 on GPUs without native bfloat16, unless infer_args sets --dtype; else None: infer.py's default."""
        return "float16" if gpus["names"] and not gpus["bf16"] and "--dtype" not in self.infer_args else None

    def command(self, gpus: dict) -> list[str]:
        """The scoring command: infer.py in one process, or under accelerate's launcher in several."""
        dtype = self.dtype(gpus)
        return [sys.executable, *launcher(self.processes(gpus)), "infer.py",
                *(flag for run in self.runs for flag in ("--adapter", run)),
                *(["--model", self.base] if self.base else []), "--data_file", self.data_file,
                "--output_file", self.output_file, "--tta", str(self.tta).lower(), *map(str, self.infer_args),
                *(["--dtype", dtype] if dtype else [])]

    def score(self) -> dict:
        """Scores the data with one process per GPU (or `gpus`), writes the submission, prints and returns the
        elapsed seconds and rows/s."""
        gpus = probe_gpus()
        command, processes, dtype = self.command(gpus), self.processes(gpus), self.dtype(gpus) or "infer.py's default"
        devices = f"{len(gpus['names'])} x {gpus['names'][0]}" if gpus["names"] else "no GPU"
        tta = f"TTA {'on' if self.tta else 'off'}"
        print(f"scoring: {processes} process(es), {devices}, dtype {dtype}, {tta}", flush=True)
        print("$ " + " ".join(command), flush=True)
        cwd = self.copy_code()
        env = {"HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "30", **os.environ}  # no hub; a progress line every 30 s
        os.makedirs(os.path.dirname(self.output_file), exist_ok=True)
        start = time.monotonic()
        status = subprocess.run(command, cwd=cwd, env=env).returncode
        seconds = time.monotonic() - start
        if status:
            raise Stop(f"error: scoring stopped (exit status {status}) after {seconds:.0f} s; its messages are above")
        rows = count_rows(self.output_file)
        print(f"done: {rows} rows in {seconds:.0f} s ({seconds / 3600:.2f} h): {rows / seconds:.2f} rows/s, "
              f"{processes} process(es), {devices}, {tta}; submission {self.output_file}")
        return {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds, 3),
                "processes": processes, "gpus": gpus["names"], "dtype": dtype, "tta": self.tta}

    def copy_code(self) -> str:
        """The folder to run in: a copy of the code in work_dir (unsloth writes its compile cache in the working
        folder, and the code's folder may be read-only: a Kaggle dataset), else the code's own folder."""
        if not self.work_dir or os.path.abspath(self.work_dir) == os.path.abspath(self.code):
            return self.code
        # file contents only, and folders left writable: a Kaggle dataset's files and folders are read-only
        shutil.copytree(self.code, self.work_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*NOT_COPIED),
                        copy_function=shutil.copyfile)
        for folder, _, _ in os.walk(self.work_dir):
            os.chmod(folder, os.stat(folder).st_mode | stat.S_IWUSR)
        return self.work_dir


def where(path: str, kind: str = "folder") -> str:
    """'PATH: no such folder', with what its parent holds when the parent is there (a Kaggle dataset's folder is
    often one level deeper or shallower than expected)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"{path}: no such {kind}"
    names = sorted(os.listdir(parent))
    held = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") or "nothing"
    return f"{path}: no such {kind} ({parent} holds: {held})"


def probe_gpus() -> dict:
    """{"names": one per GPU, "bf16": every GPU has native bfloat16 (compute capability 8.0 or more)}, from torch
    in a child process. torch.cuda.is_bf16_supported() is no test: it counts emulated bfloat16, so it says yes on
    a T4."""
    found = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    if found.returncode:
        last = (found.stderr.strip().splitlines() or [f"exit status {found.returncode}"])[-1]
        raise Stop(f"error: torch could not be asked about the GPUs: {last}")
    return json.loads(found.stdout.strip().splitlines()[-1])


def launcher(processes: int) -> list[str]:
    """The arguments before infer.py's: none for one process, accelerate's launcher for several (one process per
    GPU, or CPU processes over gloo: the way tests/test_distributed.py starts them)."""
    if processes == 1:
        return []
    with socket.socket() as s:  # a free port for the processes to meet on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port)]


def count_rows(path: str) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", dest="runs", action="append", default=[], required=True,
                        help="A run folder (repeat it for an ensemble).")
    parser.add_argument("--data_file", required=True)
    parser.add_argument("--output_file", default="submission.csv")
    parser.add_argument("--base", help="A local copy of the runs' base model.")
    parser.add_argument("--kit", help="The offline wheel kit to install first.")
    parser.add_argument("--code", default=ROOT, help="This project's folder (default: the one this script is in).")
    parser.add_argument("--work_dir", help="Copy the code here and run from here.")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--gpus", type=int, help="Processes (default: one per GPU).")
    args, infer_args = parser.parse_known_args()
    job = Submission(**vars(args), infer_args=infer_args)
    try:
        job.check()
        job.install()
        job.score()
    except Stop as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
