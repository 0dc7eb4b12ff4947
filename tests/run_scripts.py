"""Runs several project scripts one after the other in ONE new process, each as `python SCRIPT ARGS` would (runpy,
sys.argv), stopping at the first that fails: for tests that need a process of their own (an environment variable
read on import, such as HF_ENDPOINT or UNSLOTH_CPU_BF16) but not one process per script.

    python tests/run_scripts.py SCRIPT ARGS... [--then SCRIPT ARGS...]...
"""

import os
import runpy
import sys

SEPARATOR = "--then"


def main() -> None:
    commands, current = [], []
    for arg in sys.argv[1:]:
        if arg == SEPARATOR:
            commands.append(current)
            current = []
        else:
            current.append(arg)
    commands.append(current)
    for script, *args in commands:
        print(f"$ {script} {' '.join(args)}", flush=True)
        sys.argv = [script, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` sets it
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                raise


if __name__ == "__main__":
    main()
