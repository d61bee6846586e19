"""An unexpected exception inside dsrun itself: one line naming it and the file holding the full traceback, instead
of a screen of traceback (with local variables) that buries what went wrong. Exit code dsrun.exit_codes.INTERNAL."""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path


def write_traceback(err: BaseException, argv: list[str]) -> Path | None:
    """The traceback and the command line, in a new file in the temporary directory; None if it cannot be written."""
    name = f"dsrun-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    path = Path(tempfile.gettempdir()) / name
    text = "dsrun " + " ".join(argv) + "\n\n" + "".join(traceback.format_exception(err))
    try:
        path.write_text(text)
    except OSError:
        return None
    return path


def one_line(err: BaseException, path: Path | None) -> str:
    what = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
    where = f"the full traceback is in {path}" if path is not None else "the traceback could not be written"
    return f"internal error (a bug in dsrun; please report it): {what}; {where}"
