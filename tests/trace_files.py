"""Runs a project script as `python SCRIPT ARGS...` would, and records which files under FOLDER it reads and
writes, through Python's audit events (nothing in the script is replaced):

    python tests/trace_files.py LOG FOLDER SCRIPT [ARGS...]

LOG.<rank> (RANK from torchrun / accelerate launch, else 0) gets one line per event, `r PATH` (opened for reading),
`w PATH` (opened for writing, or renamed to PATH) or `d PATH` (removed). Files written by native code (safetensors,
torch.save) raise no audit event; torch.load and Python's own open, os.replace and os.remove do.
"""

import os
import runpy
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main() -> None:
    log_prefix, folder, script, *args = sys.argv[1:]
    folder = os.path.abspath(folder) + os.sep
    log = open(f"{log_prefix}.{os.environ.get('RANK', '0')}", "w", buffering=1)  # opened before the hook: not traced

    def record(kind, path):
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(folder):
                log.write(f"{kind} {path}\n")

    def hook(event, event_args):
        if event == "open":
            path, mode, flags = event_args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
            record("w" if writes else "r", path)
        elif event == "os.rename":
            record("w", event_args[1])
        elif event == "os.remove":
            record("d", event_args[0])

    sys.addaudithook(hook)
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


def read_trace(log: str) -> list[tuple[str, str]]:
    """The (kind, path) events a traced process recorded."""
    with open(log, encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split(" ", 1)) for line in f]


if __name__ == "__main__":
    main()
