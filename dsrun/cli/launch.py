"""The `dsrun` command: plan a launch from DeepSpeed-style flags, show it (--dry-run) or run it.

Everything after SCRIPT goes to the script untouched, as with DeepSpeed's launcher and torchrun.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import List

import typer
from typer._click import ClickException  # typer vendors click and re-exports its base error here

from dsrun import __version__
from dsrun.cli.abbrev import Flag, expand_prefixes
from dsrun.console import error
from dsrun.errors import UsageError
from dsrun.exit_codes import INTERNAL

RESOURCES = "Resources"
RENDEZVOUS = "Rendezvous"
SCRIPT = "Script"
OUTPUT = "Output and dry run"
PROCESSES = "Processes"
MULTI_NODE = "Multi-node"

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"dsrun {__version__}")
        raise typer.Exit()


@app.command(
    context_settings={"allow_interspersed_args": False},
    help="Launch SCRIPT on every selected GPU (or as CPU worker processes), with DeepSpeed's flags and hostfile.",
    epilog="Examples: [bold]dsrun --num_gpus 2 train.py --deepspeed_config ds.json[/bold] · "
    "[bold]dsrun --dry-run -H hostfile -i 'w0@w1:0,2' train.py[/bold]\n\n"
    "Other commands: [bold]dsrun plot RUN_DIR[/bold] draws a monitored run's training curves;"
    " [bold]dsrun consolidate CHECKPOINT_DIR OUT.pt[/bold] exports a checkpoint's fp32 weights as one file.",
)
def launch(
    ctx: typer.Context,
    script: str = typer.Argument(..., metavar="SCRIPT", help="Training script (or module with -m, or program)."),
    script_args: List[str] | None = typer.Argument(None, metavar="[SCRIPT_ARGS]...", help="Passed to SCRIPT."),
    num_gpus: int | None = typer.Option(
        None, "--num_gpus", "--num-gpus", "--num_procs", "--num-procs", "--num_accelerators",
        help="Workers per node: GPUs to use, or CPU processes on a machine without GPUs (default: all GPUs, 1 CPU).",
        rich_help_panel=RESOURCES, show_default=False),
    num_nodes: int | None = typer.Option(
        None, "--num_nodes", "--num-nodes", help="Use the first N hosts of the hostfile.",
        rich_help_panel=RESOURCES, show_default=False),
    include: str = typer.Option(
        "", "-i", "--include", help="Only these hosts/slots: [bold]host\\[:0,1]\\[@host...][/bold].",
        rich_help_panel=RESOURCES, show_default=False),
    exclude: str = typer.Option(
        "", "-e", "--exclude", help="Everything but these hosts/slots (same grammar).",
        rich_help_panel=RESOURCES, show_default=False),
    hostfile: str | None = typer.Option(
        None, "-H", "--hostfile", help="Hostfile with lines [bold]host slots=N[/bold] (default: this machine).",
        rich_help_panel=RESOURCES, show_default=False),
    device: str = typer.Option(
        "auto", "--device", help="auto (GPUs if present), cuda or cpu.", rich_help_panel=RESOURCES),
    master_addr: str | None = typer.Option(
        None, "--master_addr", "--master-addr", help="Rendezvous address (default 127.0.0.1, or the first host).",
        rich_help_panel=RENDEZVOUS, show_default=False),
    master_port: int | None = typer.Option(
        None, "--master_port", "--master-port", help="Rendezvous port (default: a free port on one node).",
        rich_help_panel=RENDEZVOUS, show_default=False),
    force_multi: bool = typer.Option(
        False, "--force_multi", "--force-multi", help="Go through the multi-node launcher even for one host.",
        rich_help_panel=RENDEZVOUS),
    module: bool = typer.Option(
        False, "-m", "--module", help="Run SCRIPT as a module (python -m).", rich_help_panel=SCRIPT),
    no_python: bool = typer.Option(
        False, "--no_python", "--no-python", help="Run SCRIPT directly, not through python.", rich_help_panel=SCRIPT),
    no_local_rank: bool = typer.Option(
        False, "--no_local_rank", "--no-local-rank", help="Do not pass --local_rank=N to the script.",
        rich_help_panel=SCRIPT),
    deepspeed_alias: bool = typer.Option(
        False, "--deepspeed-alias", "--deepspeed_alias", help="Run SCRIPT with [bold]import deepspeed[/bold] (and"
        " [bold]from deepspeed.X import Y[/bold]) loading dsrun.", rich_help_panel=SCRIPT),
    config: str | None = typer.Option(
        None, "--config", "--deepspeed_config", help="The run's config (JSON or YAML). Default: the script's "
        "--config/--deepspeed_config argument.", rich_help_panel=SCRIPT, show_default=False),
    dry_run: bool = typer.Option(
        False, "--dry-run", "--dry_run", help="Print the plan (world, env, commands, batch math); start nothing.",
        rich_help_panel=OUTPUT),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: one JSON object on stdout.",
                                 rich_help_panel=OUTPUT),
    model_params: str | None = typer.Option(
        None, "--model-params", "--model_params", metavar="N", help="With --dry-run: estimate per-rank memory for a"
        " model of N parameters (7e9, 7B, 1.3B, 350M) under the config's ZeRO stage, precision, optimizer and"
        " offload.", rich_help_panel=OUTPUT, show_default=False),
    model: str | None = typer.Option(
        None, "--model", metavar="MODULE:FACTORY", help="With --dry-run: count the parameters of the model FACTORY()"
        " returns (MODULE importable from here, or a .py path), built on the meta device in a separate process;"
        " also shows the largest layer.", rich_help_panel=OUTPUT, show_default=False),
    model_input: str | None = typer.Option(
        None, "--model-input", "--model_input", metavar="SHAPES", help="With --model: the shapes of one micro-batch's"
        " positional inputs, e.g. [bold]8x512:int64[/bold] (batch 8, 512 tokens) or [bold]32x3x224x224[/bold]"
        " (float: the run's precision), several separated by commas; estimates activation memory with and without"
        " activation checkpointing.", rich_help_panel=OUTPUT, show_default=False),
    memory_table: bool = typer.Option(
        False, "--memory-table", "--memory_table", help="With the memory estimate: all four ZeRO stages side by"
        " side, each marked fits / does not fit against every node's memory.", rich_help_panel=OUTPUT),
    device_memory: str | None = typer.Option(
        None, "--device-memory", "--device_memory", metavar="SIZE", help="Memory of one GPU on every node (CPU nodes:"
        " the RAM), e.g. 80GiB; default: measured on this machine, unknown for remote hosts.",
        rich_help_panel=OUTPUT, show_default=False),
    host_memory: str | None = typer.Option(
        None, "--host-memory", "--host_memory", metavar="SIZE", help="RAM of every node, for offloaded state, e.g."
        " 512GiB; default: measured on this machine, unknown for remote hosts.", rich_help_panel=OUTPUT,
        show_default=False),
    pipeline_stages: int = typer.Option(
        1, "--pipeline-stages", "--pipeline_stages", metavar="P", help="For the memory estimate: the PipelineModule's"
        " num_stages (the parameters are split evenly over them).", rich_help_panel=OUTPUT),
    log_dir: Path | None = typer.Option(
        None, "--log-dir", "--log_dir", "--enable_each_rank_log", help="Write each rank's output to DIR/rank{N}.log.",
        rich_help_panel=OUTPUT, show_default=False),
    live: bool = typer.Option(
        False, "--live", help="On a terminal: a table of every rank (state, CPU, memory, step, loss, samples/s)"
        " updated in place, the output scrolling above it (with -q and --log-dir: only in the log dir).",
        rich_help_panel=OUTPUT),
    quiet: bool = typer.Option(
        False, "-q", "--quiet", help="Launcher messages only on error; with --log-dir, no console copy.",
        rich_help_panel=OUTPUT),
    bind_cores_to_rank: bool = typer.Option(
        False, "--bind_cores_to_rank", "--bind-cores-to-rank", help="Give each local rank its own block of cores.",
        rich_help_panel=PROCESSES),
    bind_core_list: str | None = typer.Option(
        None, "--bind_core_list", "--bind-core-list", help="Cores to split among ranks, e.g. 0-7,16-23 "
        "(implies --bind_cores_to_rank).", rich_help_panel=PROCESSES, show_default=False),
    shutdown_timeout: float = typer.Option(
        10.0, "--shutdown-timeout", "--shutdown_timeout", help="Seconds between SIGTERM and SIGKILL at teardown.",
        rich_help_panel=PROCESSES),
    max_restarts: int = typer.Option(
        0, "--max_restarts", "--max-restarts", help="When a rank fails, tear the world down and start it again, at "
        "most N times (workers see DSRUN_RESTART_COUNT; checkpoint.auto_resume resumes them).",
        rich_help_panel=PROCESSES),
    restart_backoff: float = typer.Option(
        1.0, "--restart-backoff", "--restart_backoff", help="Seconds before the first restart, doubling for each "
        "next one (at most 60).", rich_help_panel=PROCESSES),
    hang_timeout: float | None = typer.Option(
        None, "--hang-timeout", "--hang_timeout", metavar="SECONDS", help="Stop the job when a rank makes no "
        "optimizer-step progress for SECONDS, or the ranks disagree on the step that long: print where each rank "
        "is, write every rank's stack to the log dir, exit with code 124. Off by default; e.g. 600 (more than the "
        "longest pause between optimizer steps: evaluation, checkpoint saves).", rich_help_panel=PROCESSES,
        show_default=False),
    launcher: str = typer.Option(
        "", "--launcher", help="How hosts are reached: [bold]ssh[/bold] (default with a hostfile) or "
        "[bold]slurm[/bold] (inside an allocation: one agent per node with srun).", rich_help_panel=MULTI_NODE,
        show_default=False),
    ssh_port: int | None = typer.Option(
        None, "--ssh_port", "--ssh-port", help="SSH port for every host (overrides Port in ~/.ssh/config).",
        rich_help_panel=MULTI_NODE, show_default=False),
    ssh_accept_new_hosts: bool = typer.Option(
        False, "--ssh-accept-new-hosts", "--ssh_accept_new_hosts", help="Trust hosts missing from known_hosts and "
        "add their keys to it (a changed key is still refused).", rich_help_panel=MULTI_NODE),
    ssh_timeout: float = typer.Option(
        10.0, "--ssh-timeout", "--ssh_timeout", help="Seconds to wait for a host to answer.",
        rich_help_panel=MULTI_NODE),
    remote_python: str | None = typer.Option(
        None, "--remote-python", "--remote_python", help="Python on the hosts (default: this one's path).",
        rich_help_panel=MULTI_NODE, show_default=False),
    remote_cwd: str | None = typer.Option(
        None, "--remote-cwd", "--remote_cwd", help="Working directory on the hosts (default: this one).",
        rich_help_panel=MULTI_NODE, show_default=False),
    launcher_args: str = typer.Option(
        "", "--launcher_args", "--launcher-args", help="Extra arguments for srun, as one quoted string.",
        rich_help_panel=MULTI_NODE, show_default=False),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    from dsrun.launcher.plan.resolve import LaunchOptions, plan_launch

    if as_json and not dry_run:
        raise UsageError("--json only works with --dry-run")
    memory = _memory_request(ctx.params)
    if not 0 <= shutdown_timeout < float("inf"):  # also refuses nan
        raise UsageError(f"--shutdown-timeout must be a finite number of seconds, 0 or more, got {shutdown_timeout:g}")
    if max_restarts < 0:
        raise UsageError(f"--max_restarts must be 0 or more, got {max_restarts}")
    if not 0 <= restart_backoff < float("inf"):
        raise UsageError(f"--restart-backoff must be a finite number of seconds, 0 or more, got {restart_backoff:g}")
    if hang_timeout is not None and not 0 < hang_timeout < float("inf"):
        raise UsageError(f"--hang-timeout must be a finite number of seconds, more than 0, got {hang_timeout:g}")
    if ssh_timeout <= 0:
        raise UsageError(f"--ssh-timeout must be more than 0 seconds, got {ssh_timeout:g}")
    # The planner's options are the command's own parameters, by name (`python` keeps its default: this interpreter).
    given = ctx.params
    planned = {f.name for f in dataclasses.fields(LaunchOptions)} - {"python"}
    options = LaunchOptions(**{name: given[name] for name in planned})
    plan = plan_launch(dataclasses.replace(
        options, script_args=list(script_args or []),
        bind_cores_to_rank=bind_cores_to_rank or bind_core_list is not None))
    if dry_run:
        from dsrun.launcher.plan import render, render_remote
        estimate = None
        if memory is not None:
            from dsrun.launcher.memory.estimate import build

            estimate = build(plan, memory)
        if as_json:
            print(render.plan_json(plan, memory=estimate))
        else:
            render.print_plan(plan)
            render_remote.print_remote(plan)
            if estimate is not None:
                from dsrun.launcher.plan.render_memory import print_memory

                print_memory(estimate)
        return
    from dsrun.launcher.live.view import live_wanted
    from dsrun.launcher.plan.world import WorldPlan
    from dsrun.launcher.restarts import run_with_restarts

    live = live_wanted(live, sys.stdout)

    def run(attempt: WorldPlan) -> int:
        if attempt.launcher == "ssh":
            from dsrun.launcher.backends.ssh.run import run_ssh

            return run_ssh(attempt, log_dir=log_dir, quiet=quiet, shutdown_timeout=shutdown_timeout,
                           accept_new=ssh_accept_new_hosts, ssh_timeout=ssh_timeout, hang_timeout=hang_timeout,
                           live=live)
        if attempt.launcher == "slurm":
            from dsrun.launcher.backends.slurm.run import run_slurm

            return run_slurm(attempt, log_dir=log_dir, quiet=quiet, shutdown_timeout=shutdown_timeout,
                             hang_timeout=hang_timeout, live=live)
        from dsrun.launcher.backends.local import run_local

        return run_local(attempt, log_dir=log_dir, quiet=quiet, shutdown_timeout=shutdown_timeout,
                         hang_timeout=hang_timeout, live=live)

    code = run_with_restarts(plan, run, max_restarts, restart_backoff)
    raise typer.Exit(code)


_MEMORY_FLAGS = {"model_params": "--model-params", "model": "--model", "model_input": "--model-input",
                 "memory_table": "--memory-table", "device_memory": "--device-memory", "host_memory": "--host-memory"}


def _memory_request(params: dict):
    """The memory estimate's flags, checked; None when none was given."""
    from dsrun.launcher.memory.estimate import MemoryRequest
    from dsrun.launcher.memory.probe_client import check_input_spec, check_model_spec
    from dsrun.launcher.memory.sizes import parse_bytes, parse_count

    given = [flag for name, flag in _MEMORY_FLAGS.items() if params[name]]
    if params["pipeline_stages"] != 1:
        given.append("--pipeline-stages")
    if not given:
        return None
    if not params["dry_run"]:
        raise UsageError(f"{given[0]} only works with --dry-run (it estimates memory before a launch)")
    if params["model"] and params["model_params"]:
        raise UsageError("--model and --model-params exclude each other: give the model or its parameter count")
    if not params["model"] and not params["model_params"]:
        raise UsageError(f"{given[0]} needs --model MODULE:FACTORY or --model-params N (the model to estimate)")
    if params["model_input"] and not params["model"]:
        raise UsageError("--model-input needs --model MODULE:FACTORY (the model to run the input through)")
    if params["pipeline_stages"] < 1:
        raise UsageError(f"--pipeline-stages must be 1 or more, got {params['pipeline_stages']}")
    if params["model"]:
        check_model_spec(params["model"])
    if params["model_input"]:
        check_input_spec(params["model_input"])
    return MemoryRequest(
        model_params=parse_count(params["model_params"]) if params["model_params"] else None,
        model=params["model"],
        model_input=params["model_input"],
        pipeline_stages=params["pipeline_stages"],
        device_memory=parse_bytes(params["device_memory"]) if params["device_memory"] else None,
        host_memory=parse_bytes(params["host_memory"], "--host-memory") if params["host_memory"] else None,
        all_stages=params["memory_table"],
    )


# `dsrun NAME ...` runs a tool; any other first argument is the launch command's (a flag or the script). A script
# that happens to be named like a tool is launched as `dsrun ./NAME`.
from dsrun.cli.tools import SUBCOMMANDS  # noqa: E402 - after the launch command, which it does not need


def _launch_flags() -> dict[str, Flag]:
    flags = {}
    for param in typer.main.get_command(app).params:
        if param.param_type_name == "option":
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("--"):
                    flags[name] = Flag(key=param.name or name, takes_value=not getattr(param, "is_flag", False))
    return flags


def _fail(message: str, code: int = 2) -> None:
    error(message)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command, prog = app, "dsrun"
    if args and args[0] in SUBCOMMANDS:
        prog = f"dsrun {args[0]}"
        command = SUBCOMMANDS[args.pop(0)]
    try:
        if command is app:
            args = expand_prefixes(args, _launch_flags())
        code = command(args=args, prog_name=prog, standalone_mode=False)
    except UsageError as err:
        _fail(str(err), err.exit_code)
    except ClickException as err:  # bad flags: one line, not a framed panel
        _fail(err.format_message(), err.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:  # noqa: BLE001 - anything else is a bug of ours: one line, the traceback in a file
        from dsrun.cli.crash import one_line, write_traceback

        _fail(one_line(err, write_traceback(err, args)), INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
