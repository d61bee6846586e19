"""The git commit and branch dsrun runs from, when it runs from a checkout (an editable install); else None.

Read from .git's files rather than by running git: importing dsrun must stay instant.
"""

from __future__ import annotations

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent / ".git"


def _head() -> str | None:
    try:
        return (_CHECKOUT / "HEAD").read_text().strip()
    except OSError:
        return None


def git_branch() -> str | None:
    head = _head()
    return head.removeprefix("ref: refs/heads/") if head and head.startswith("ref: refs/heads/") else None


def git_hash() -> str | None:
    head = _head()
    if head is None or not head.startswith("ref: "):
        return head  # a detached HEAD holds the hash itself
    ref = head.removeprefix("ref: ")
    try:
        return (_CHECKOUT / ref).read_text().strip()
    except OSError:
        pass
    try:  # refs packed away by git gc
        for line in (_CHECKOUT / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    except OSError:
        pass
    return None
