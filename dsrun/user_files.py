"""Reading a file the user named (a config, a hostfile): any problem is one UsageError naming the file. No torch."""

from __future__ import annotations

import os
from pathlib import Path

from dsrun.errors import UsageError


def read_user_file(path: str | os.PathLike[str], kind: str) -> str:
    """The text of `path`; `kind` names it in errors ("config file", "hostfile")."""
    file = Path(path)
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{kind} {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {kind} {file}: {err}") from None
