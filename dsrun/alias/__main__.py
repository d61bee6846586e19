"""`python -m dsrun.alias [-m] SCRIPT [ARGS...]`: run SCRIPT (or module) with `import deepspeed` resolving to dsrun."""

from __future__ import annotations

import importlib.util
import runpy
import sys

from dsrun.alias import install
from dsrun.console import say


def main(argv: list[str]) -> None:
    as_module = bool(argv) and argv[0] == "-m"
    if as_module:
        argv = argv[1:]
    if not argv:
        print("usage: python -m dsrun.alias [-m] SCRIPT [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    if importlib.util.find_spec("deepspeed") is not None:
        say("note: DeepSpeed is installed; --deepspeed-alias makes `import deepspeed` load dsrun anyway")
    install()
    sys.argv = list(argv)
    if as_module:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, str(__import__("pathlib").Path(argv[0]).resolve().parent))  # as `python SCRIPT` does
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
