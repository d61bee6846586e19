"""Where a checkpoint lives on disk, and the file operations that keep it crash-safe.

    SAVE_DIR/latest                 the newest complete tag (replaced atomically, DeepSpeed's file name)
    SAVE_DIR/<tag>/                 one checkpoint: DCP shards + .metadata, dsrun_state.pt, rng/rank<N>.pt
    SAVE_DIR/.tmp-<tag>-<nonce>/    a save in progress; renamed to <tag> only when every rank has finished

A rename is atomic, so a process killed at any moment leaves either the old or the new checkpoint whole. (A power
cut is another matter: like torch.save, shards are not fsynced.)
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from dsrun.errors import UsageError

LATEST = "latest"
STATE_FILE = "dsrun_state.pt"
METADATA = ".metadata"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise UsageError(f"checkpoint tag {tag!r} must be a plain name (letters, digits, '_', '.', '-', '=', '+')")
    return tag


def temp_dir(save_dir: Path, tag: str, nonce: str) -> Path:
    return save_dir / f".tmp-{tag}-{nonce}"


def replaced_dir(save_dir: Path, tag: str, nonce: str) -> Path:
    return save_dir / f".replaced-{tag}-{nonce}"


def read_latest(save_dir: Path) -> str | None:
    try:
        return (save_dir / LATEST).read_text().strip() or None
    except FileNotFoundError:
        return None


def write_latest(save_dir: Path, tag: str) -> None:
    pending = save_dir / f".{LATEST}.tmp"
    with open(pending, "w") as f:
        f.write(tag)
        f.flush()
        os.fsync(f.fileno())
    os.replace(pending, save_dir / LATEST)


def publish(save_dir: Path, staged: Path, tag: str, nonce: str) -> None:
    """Move a finished save into place as `tag`, replacing an older checkpoint of the same tag."""
    final = save_dir / tag
    old = None
    if final.exists():
        old = replaced_dir(save_dir, tag, nonce)
        os.rename(final, old)
    os.rename(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale(save_dir: Path, current_nonce: str) -> None:
    """Delete staging and replaced directories left by saves that were killed (every rank has moved past them)."""
    for leftover in [*save_dir.glob(".tmp-*"), *save_dir.glob(".replaced-*")]:
        if not leftover.name.endswith(current_nonce):
            shutil.rmtree(leftover, ignore_errors=True)


def find_tag_dir(save_dir: Path, tag: str) -> Path | None:
    """The directory of `tag`, or the one a save was replacing when it was killed between two renames."""
    final = save_dir / tag
    if final.is_dir():
        return final
    leftovers = sorted(save_dir.glob(f".replaced-{tag}-*"), key=lambda p: p.stat().st_mtime)
    return leftovers[-1] if leftovers else None


def is_checkpoint(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / METADATA).is_file()


def available_tags(save_dir: Path) -> list[str]:
    if not save_dir.is_dir():
        return []
    tags = [p for p in save_dir.iterdir() if not p.name.startswith(".") and p.is_dir() and is_checkpoint(p)]
    return [p.name for p in sorted(tags, key=lambda p: p.stat().st_mtime)]


def prune(save_dir: Path, keep_last: int, protect: str) -> list[str]:
    """Delete all but the newest `keep_last` checkpoints (never `protect`, the one just written, nor the one
    `latest` names, which a save with save_latest=False leaves in place)."""
    keep = {protect, read_latest(save_dir)}
    tags = [t for t in available_tags(save_dir) if t not in keep]
    doomed = tags[: max(len(tags) - (keep_last - 1), 0)]
    for tag in doomed:
        shutil.rmtree(save_dir / tag, ignore_errors=True)
    return doomed


def describe_foreign(path: Path) -> str | None:
    """Name the format of a directory that is not a dsrun checkpoint, when we recognise it."""
    if any(path.glob("*model_states.pt")) or any(path.glob("*optim_states.pt")):
        return "a DeepSpeed checkpoint (mp_rank_*_model_states.pt); dsrun reads only its own format"
    return None
