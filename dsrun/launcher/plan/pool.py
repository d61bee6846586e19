"""Which hosts and slots a run uses: hostfile + `--include/--exclude/--num_nodes/--num_gpus` → {host: [slots]}.

Grammar and semantics follow DeepSpeed's launcher so existing hostfiles and selectors keep working:
  hostfile line   `HOST slots=N` (whole-line `#` comments and blank lines allowed; MPI's `max_slots=` ignored)
  selector        `SPEC[@SPEC...]`, SPEC = `HOST` or `HOST:SLOT[,SLOT...]`
  include         only the named hosts; a bare host means all its slots, a slotted one exactly those slots
  exclude         everything but the named hosts/slots; hosts left without slots drop out
Results keep hostfile order (that order is node rank order). Where DeepSpeed crashes or silently does something
else (empty world, too many nodes or GPUs, trailing garbage, duplicate hosts) we stop with a UsageError instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from dsrun.errors import UsageError
from dsrun.user_files import read_user_file

Pool = dict[str, list[int]]  # host -> slot ids, in node order

# Host names travel into ssh commands and selector strings: letters, digits, '.', '-', '_' only.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HOSTFILE_LINE = re.compile(r"(?P<host>\S+)\s+slots=(?P<slots>\d+)(?:\s+max_slots=\d+)?\s*(?:#.*)?")


def check_host_name(host: str, where: str) -> None:
    if not _HOST.fullmatch(host):
        hint = " (put the user in ~/.ssh/config instead of user@host)" if "@" in host else ""
        raise UsageError(f"{where}: host name {host!r} may only contain letters, digits, '.', '-' and '_'{hint}")


# One worker process per slot: far beyond any host's GPUs or cores, and low enough that a typo never starts a plan
# of billions of ranks.
MAX_SLOTS = 4096


def parse_hostfile(text: str, source: str = "hostfile") -> Pool:
    """Parse hostfile text into {host: [0..slots-1]}. Hosts with slots=0 are left out."""
    pool: Pool = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _HOSTFILE_LINE.fullmatch(line)
        if not match:
            raise UsageError(f"{source}:{number}: expected 'HOST slots=N', got {line!r}")
        host = match["host"]
        check_host_name(host, f"{source}:{number}")
        if host in pool:
            raise UsageError(f"{source}:{number}: host {host!r} is listed twice; give each host one line")
        slots = int(match["slots"])
        if slots > MAX_SLOTS:
            raise UsageError(f"{source}:{number}: slots={slots} for {host!r}: more workers than one host can run"
                             f" (at most {MAX_SLOTS:,})")
        pool[host] = list(range(slots))
    if not pool:
        raise UsageError(f"{source} lists no hosts: add lines like 'worker-0 slots=8'")
    return pool


def read_hostfile(path: str | Path) -> Pool:
    return parse_hostfile(read_user_file(path, "hostfile"), str(Path(path)))


def parse_selector(text: str, flag: str) -> dict[str, list[int] | None]:
    """Parse `host[:i,j]@host...` into {host: sorted slots, or None for "the whole host"}.

    Specs naming the same host merge: slots are unioned; a bare spec next to a slotted one adds nothing.
    """
    selection: dict[str, list[int] | None] = {}
    for spec in text.split("@"):
        spec = spec.strip()
        host, colon, slot_text = spec.partition(":")
        host = host.strip()
        if not host:
            raise UsageError(f"{flag} {text!r}: empty host name (stray '@' or ':'?)")
        check_host_name(host, f"{flag} {text!r}")
        if not colon:
            selection.setdefault(host, None)
            continue
        slots = []
        for token in slot_text.split(","):
            token = token.strip()
            if not token.isdigit():
                raise UsageError(f"{flag} {text!r}: slot {token!r} on {host} is not a number (write {host}:0,1,2)")
            slots.append(int(token))
        previous = selection.get(host) or []
        selection[host] = sorted(set(previous) | set(slots))
    return selection


def _check_known(pool: Pool, selection: dict[str, list[int] | None], flag: str) -> None:
    for host, slots in selection.items():
        if host not in pool:
            raise UsageError(f"{flag}: host {host!r} is not in the pool ({', '.join(pool) or 'empty'})")
        for slot in slots or []:
            if slot not in pool[host]:
                raise UsageError(f"{flag}: host {host!r} has no slot {slot} (its slots: {_slot_list(pool[host])})")


def _slot_list(slots: list[int]) -> str:
    return ",".join(map(str, slots)) or "none"


def include(pool: Pool, text: str) -> Pool:
    selection = parse_selector(text, "--include")
    _check_known(pool, selection, "--include")
    return {host: list(slots) if (chosen := selection[host]) is None else chosen for host, slots in pool.items()
            if host in selection}


def exclude(pool: Pool, text: str) -> Pool:
    selection = parse_selector(text, "--exclude")
    _check_known(pool, selection, "--exclude")
    kept: Pool = {}
    for host, slots in pool.items():
        if host in selection and selection[host] is None:
            continue
        left = [s for s in slots if s not in (selection.get(host) or [])]
        if left:
            kept[host] = left
    return kept


def select(
    pool: Pool,
    include_text: str = "",
    exclude_text: str = "",
    num_nodes: int | None = None,
    num_gpus: int | None = None,
) -> Pool:
    """Apply the selection flags to a pool; the result is never empty."""
    if include_text and exclude_text:
        raise UsageError("--include and --exclude are mutually exclusive: use one of them")
    if (include_text or exclude_text) and (num_nodes is not None or num_gpus is not None):
        raise UsageError("--num_nodes/--num_gpus cannot be combined with --include/--exclude: use one way")
    for flag, value in (("--num_nodes", num_nodes), ("--num_gpus", num_gpus)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    chosen = {host: slots for host, slots in pool.items() if slots}
    if include_text:
        chosen = include(chosen, include_text)
    elif exclude_text:
        chosen = exclude(chosen, exclude_text)
    if num_nodes is not None:
        if num_nodes > len(chosen):
            raise UsageError(f"--num_nodes {num_nodes} asks for more hosts than the {len(chosen)} available")
        chosen = dict(list(chosen.items())[:num_nodes])
    if num_gpus is not None:
        short = [f"{host} ({len(slots)})" for host, slots in chosen.items() if len(slots) < num_gpus]
        if short:
            raise UsageError(f"--num_gpus {num_gpus} is more than these hosts have: {', '.join(short)}")
        chosen = {host: slots[:num_gpus] for host, slots in chosen.items()}
    if not chosen:
        raise UsageError("the selection leaves no host and no slot to run on: check --include/--exclude")
    return chosen
