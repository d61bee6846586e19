"""Showing a WorldPlan: rich tables for people, one JSON object for programs."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from typing import TypeVar

from dsrun.launcher.plan.world import WorldPlan

T = TypeVar("T")

# Env vars every rank gets with the same value: shown once above the rank table instead of in every row.
_SHARED_ENV = ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "CROSS_SIZE", "DSRUN_ACCELERATOR", "DSRUN_CONFIG")
_PER_RANK_SHOWN = ("RANK", "LOCAL_RANK", "NODE_RANK", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


# A big world's tables show their first and last rows: 8192 rank rows take rich seconds to lay out and nobody
# reads them on a terminal; `--json` lists every node and rank.
_SHOWN_ROWS = 16
_INDENTED_RANKS = 256


def ends(rows: list[T], table, what: str) -> Iterator[T]:
    """The rows to show, in order; between the first and last few, the table gets a row saying how many are left
    out (added as the caller reaches that point)."""
    if len(rows) <= _SHOWN_ROWS:
        yield from rows
        return
    half = _SHOWN_ROWS // 2
    yield from rows[:half]
    table.add_row("⋮", f"{len(rows) - _SHOWN_ROWS} more {what}s")
    yield from rows[-half:]


def plan_json(plan: WorldPlan, memory: dict | None = None) -> str:
    """The plan as one JSON object; with a memory estimate, under "memory" (estimate.py documents its fields)."""
    data = plan.to_dict()
    if memory is not None:
        data["memory"] = memory
    # Indented JSON goes through the json module's pure-Python encoder (the C one only writes without indent): at
    # 8192 ranks that is 1.4 s against 0.1 s. A big world's plan is for programs anyway: one line.
    return json.dumps(data, indent=2 if len(plan.ranks) <= _INDENTED_RANKS else None)


def print_plan(plan: WorldPlan) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (a file, a pager) gets room for whole commands instead of rich's 80-column default.
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    console.print(
        f"[bold]dsrun dry run[/bold]: {plan.world_size} rank(s) on {len(plan.nodes)} node(s), "
        f"{plan.accelerator} / {plan.backend}, launcher {plan.launcher}, "
        f"master {plan.master_addr}:{plan.master_port} — nothing was started"
        + (" (the tables show the first and last rows; --json lists all)" if len(plan.ranks) > _SHOWN_ROWS else "")
    )

    nodes = Table(title="Nodes", title_justify="left")
    for column in ("node", "host", "slots", "ranks"):
        nodes.add_column(column)
    for node in ends(plan.nodes, nodes, "node"):
        nodes.add_row(str(node.node_rank), node.host, ",".join(map(str, node.slots)), span(node.ranks))
    console.print(nodes)

    first = plan.ranks[0].env
    shared = "  ".join(f"{k}={first[k]}" for k in _SHARED_ENV if k in first)
    ranks = Table(title="Ranks", title_justify="left", caption=f"every rank also gets: {shared}",
                  caption_justify="left")
    for column in ("rank", "host", "slot", "env", "command"):
        ranks.add_column(column, overflow="fold")
    for rank in ends(plan.ranks, ranks, "rank"):
        env = " ".join(f"{k}={rank.env[k]}" for k in _PER_RANK_SHOWN if k in rank.env)
        if rank.cores:
            env += f" cores={span(rank.cores)}"
        ranks.add_row(str(rank.rank), rank.host, str(rank.slot), env, shlex.join(rank.command))
    console.print(ranks)

    if plan.batch is not None:
        derived = ", ".join(plan.batch.derived) or "nothing (all three given)"
        console.print(f"[bold]Batch[/bold] ({plan.config_path}): {plan.batch.derivation()}; derived: {derived}")
    else:
        console.print("[bold]Batch[/bold]: no config (pass --config or give the script --deepspeed_config)")
    for note in plan.notes:
        console.print(f"[yellow]note[/yellow]: {note}")


def span(numbers: list[int]) -> str:
    """[0,1,2,3,5] → '0-3,5': keeps a 1024-rank node readable; [] → 'none'."""
    if not numbers:
        return "none"
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
