"""Reading a dumped stack: faulthandler's (what dsrun's runtime writes on SIGUSR1) or `py-spy dump`'s, down to one
phrase saying where a rank is: "in all_reduce <- engine.step <- train.py:42".

The phrase names the innermost Python function (where the rank waits), the library call the user's code made to
get there (module.function), and the user's line: the innermost frame outside the standard library, installed
packages and dsrun itself. Only the main thread is described; the full text keeps every thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_FAULTHANDLER_THREAD = re.compile(r"^(Current thread|Thread) 0x[0-9a-fA-F]+.*\(most recent call first\):$|"
                                  r"^Stack \(most recent call first\):$")
_FAULTHANDLER_FRAME = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+) in (?P<function>.*)$')
_PY_SPY_THREAD = re.compile(r"^Thread \S+ \(.*\)(: \"(?P<name>.*)\")?$")
_PY_SPY_FRAME = re.compile(r"^\s+(?P<function>\S.*?) \((?P<file>.*):(?P<line>\d+)\)$")
_LIBRARY_PARTS = ("site-packages", "dist-packages", "dsrun")
_DECORATORS = ("wrapper", "inner", "wrapped", "decorate_context", "_fn")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int


@dataclass
class Thread:
    header: str
    frames: list[Frame]  # innermost first, as both tools print them


def threads(text: str) -> list[Thread]:
    found: list[Thread] = []
    for line in text.splitlines():
        if _FAULTHANDLER_THREAD.match(line) or _PY_SPY_THREAD.match(line):
            found.append(Thread(line, []))
            continue
        match = _FAULTHANDLER_FRAME.match(line) or _PY_SPY_FRAME.match(line)
        if match and found:
            found[-1].frames.append(Frame(match["function"], match["file"], int(match["line"])))
    return [thread for thread in found if thread.frames]


def _started_by_threading(thread: Thread) -> bool:
    outermost = thread.frames[-1]
    return outermost.function == "_bootstrap" and outermost.file.endswith("threading.py")


def main_thread(found: list[Thread]) -> Thread | None:
    """py-spy names it; faulthandler lists threads newest first, so the main thread is the last one that
    threading did not start."""
    for thread in found:
        if '"MainThread"' in thread.header:
            return thread
    for thread in reversed(found):
        if not _started_by_threading(thread):
            return thread
    return found[-1] if found else None


def _is_library(path: str) -> bool:
    parts = PurePosixPath(path).parts
    if path.startswith("<") or any(part in _LIBRARY_PARTS for part in parts):
        return True
    # The standard library: .../lib/python3.X/...
    return any(a == "lib" and b.startswith("python") for a, b in zip(parts, parts[1:], strict=False))


def where(text: str) -> str | None:
    """"in all_reduce <- engine.step <- train.py:42" for a dumped stack, or None when it has no Python frame."""
    thread = main_thread(threads(text))
    if thread is None:
        return None
    frames = thread.frames
    user = next((i for i, frame in enumerate(frames) if not _is_library(frame.file)), len(frames) - 1)
    line = f"{PurePosixPath(frames[user].file).name}:{frames[user].line}"
    if user == 0:  # waiting in the user's own code (a sleep, a loop, a C call)
        return f"in {frames[0].function} ({line})"
    parts = [f"in {frames[0].function}"]
    call = user - 1  # the library call the user made, past the decorators around it (torch's collectives have one)
    while call > 0 and frames[call].function in _DECORATORS:
        call -= 1
    if call > 0:  # unless it is the innermost function itself
        parts.append(f"{PurePosixPath(frames[call].file).stem}.{frames[call].function}")
    return " <- ".join([*parts, line])
