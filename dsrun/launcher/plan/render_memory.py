"""Showing the dry run's memory estimate (dsrun/launcher/memory/estimate.py) to people."""

from __future__ import annotations

import sys

from dsrun.launcher.memory.sizes import show_bytes, show_count


def verdict_text(fits: list[dict], node_count: int) -> str:
    """'fits (needs 12.3 GiB per GPU, has 80.0 GiB)'; groups of nodes with other verdicts follow, named."""
    parts = []
    for group in fits:
        where = group["where"]
        per = " per GPU" if where == "GPU" else f" of {where} for {group['ranks']} rank(s)"
        needs = show_bytes(group["needs"])
        hosts = group["hosts"]
        on = "" if len(hosts) == node_count else f" on {_hosts(hosts)}"
        if group["fits"] is None:
            parts.append(f"unknown{on or f' on all {node_count} node(s)'}: needs {needs}{per}; "
                         f"{group['unknown_because']}")
        elif group["fits"]:
            parts.append(f"fits{on} (needs {needs}{per}, has {show_bytes(group['has'])})")
        elif group["with_checkpointing"]:
            parts.append(f"fits{on} only with activation checkpointing (needs {needs}{per} without it, has"
                         f" {show_bytes(group['has'])})")
        else:
            parts.append(f"does not fit{on} (needs {needs}{per}, has {show_bytes(group['has'])})")
    return "; ".join(parts)


def _hosts(hosts: list[str], limit: int = 3) -> str:
    return ", ".join(hosts[:limit]) + (f" and {len(hosts) - limit} more" if len(hosts) > limit else "")


def _state_line(state: dict) -> str:
    return (f"params {show_bytes(state['params'])} + grads {show_bytes(state['grads'])} + optimizer"
            f" {show_bytes(state['optimizer'])} + fp32 masters {show_bytes(state['masters'])} + step buffer"
            f" {show_bytes(state['step_transient'])} = {show_bytes(state['total'])}")


def print_memory(memory: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    nodes = len(memory["nodes"])
    offload = ", offload" if memory["offload"] else ""
    optimizer = memory["optimizer"] or "script's optimizer"
    console.print(
        f"[bold]Memory[/bold] per rank: {show_count(memory['parameters'])} parameters ({memory['parameters_from']}),"
        f" ZeRO stage {memory['stage']}, {memory['precision']}, {optimizer}{offload};"
        f" N = {memory['data_parallel']} data-parallel rank(s)"
        + (f" x {memory['pipeline_stages']} pipeline stages" if memory["pipeline_stages"] > 1 else ""))
    state = memory["model_state"]
    console.print(f"  model state: {escape(state['formula'])} (Ψ = parameters per pipeline stage)")
    console.print(f"    {_state_line(state)}")
    if state["host"]:
        console.print(f"    offloaded to host RAM: {show_bytes(state['host'])}; on the device:"
                      f" {show_bytes(state['device'])}")
    if memory["largest_layer"]:
        layer = memory["largest_layer"]
        console.print(f"  largest layer: {escape(layer['name'])}, {show_count(layer['parameters'])} parameters,"
                      f" {show_bytes(layer['bytes'])}")
    if memory["stage3_gathered"]:
        console.print(f"  stage 3 gathers at most {show_bytes(memory['stage3_gathered'])} of parameters at a time"
                      " (root unit + the running and the prefetched unit)")
    acts = memory["activations"]
    if acts:
        console.print(f"  activations of one micro-batch ({escape(acts['input'])}):"
                      f" {show_bytes(acts['without_checkpointing'])} without activation checkpointing,"
                      f" {show_bytes(acts['with_checkpointing'])} with it (per block)")
    elif memory["parameters_from"] == "--model":
        console.print("  activations: not estimated (give --model-input with the micro-batch's input shapes)")
    else:
        console.print("  activations: not counted (--model MODULE:FACTORY with --model-input estimates them)")
    console.print(f"  stage {memory['stage']}: {escape(memory['unsupported'] or verdict_text(memory['fits'], nodes))}")
    if memory["stages"]:
        table = Table(title="Which ZeRO stage fits (per rank)", title_justify="left")
        for column in ("stage", "formula", "model state", "on device", "in host RAM", "verdict"):
            table.add_column(column, overflow="fold")
        for entry in memory["stages"]:
            stage_state = entry["model_state"]
            verdict = entry.get("unsupported") or verdict_text(entry["fits"], nodes)
            table.add_row(str(entry["stage"]), escape(stage_state["formula"]), show_bytes(stage_state["total"]),
                          show_bytes(entry["need"]["device"]), show_bytes(entry["need"]["host"]), escape(verdict))
        console.print(table)
    for note in memory["notes"]:
        console.print(f"[yellow]note[/yellow]: {escape(note)}")
