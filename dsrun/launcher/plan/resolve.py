"""From the CLI's options to a WorldPlan: pick the pool, apply the selectors, read the config, number the ranks."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from dsrun.config import find_config_in_args, load_config, parse_run_config, resolve_batch
from dsrun.config.batch import BatchMath, has_batch_keys
from dsrun.errors import UsageError
from dsrun.launcher.plan import devices as devices_mod
from dsrun.launcher.plan import resolve_remote
from dsrun.launcher.plan import slurm_allocation as slurm
from dsrun.launcher.plan.cores import parse_core_list
from dsrun.launcher.plan.pool import Pool, read_hostfile, select
from dsrun.launcher.plan.ports import check_port, free_port
from dsrun.launcher.plan.world import LaunchSpec, WorldPlan, build_plan, launcher_for

DEEPSPEED_DEFAULT_HOSTFILE = Path("/job/hostfile")

# Flags that only mean something to the launcher: seen after the script, they were probably meant for dsrun.
_LAUNCHER_ONLY_FLAGS = (
    "--num_gpus", "--num-gpus", "--num_procs", "--num_nodes", "--num-nodes", "--include", "--exclude",
    "--hostfile", "--master_port", "--master-port", "--master_addr", "--master-addr", "--dry-run",
)


@dataclass
class LaunchOptions:
    script: str
    script_args: list[str] = field(default_factory=list)
    num_gpus: int | None = None
    num_nodes: int | None = None
    include: str = ""
    exclude: str = ""
    hostfile: str | None = None
    device: str = "auto"
    master_addr: str | None = None
    master_port: int | None = None
    module: bool = False
    no_python: bool = False
    no_local_rank: bool = False
    force_multi: bool = False
    config: str | None = None
    bind_cores_to_rank: bool = False
    bind_core_list: str | None = None
    python: str = sys.executable
    launcher: str = ""  # --launcher: "" (ssh when hosts are remote), "ssh" or "slurm"
    ssh_port: int | None = None
    remote_python: str | None = None
    remote_cwd: str | None = None
    launcher_args: str = ""
    deepspeed_alias: bool = False


def _local_pool(devices: devices_mod.LocalDevices, opts: LaunchOptions, cores: list[int]) -> Pool:
    if devices.kind == "cuda":
        slots = sorted(devices.tokens)
        if opts.num_gpus is not None and opts.num_gpus > len(slots):
            raise UsageError(f"--num_gpus {opts.num_gpus} is more than the {len(slots)} GPU(s) here ({devices.source})")
        return {"localhost": slots}
    if opts.num_gpus is not None:
        return {"localhost": list(range(max(opts.num_gpus, 1)))}
    if opts.include or opts.exclude:
        return {"localhost": list(range(len(cores)))}  # on CPU a slot is a worker process, at most one per core
    return {"localhost": [0]}


def _pool(opts: LaunchOptions, devices: devices_mod.LocalDevices, cores: list[int], notes: list[str]):
    hostfile = opts.hostfile
    if hostfile is None and DEEPSPEED_DEFAULT_HOSTFILE.is_file():
        hostfile = str(DEEPSPEED_DEFAULT_HOSTFILE)
        notes.append(f"using {hostfile} (DeepSpeed's default hostfile); pass -H to choose another")
    if hostfile is None:
        if opts.num_nodes is not None and opts.num_nodes > 1:
            raise UsageError(f"--num_nodes {opts.num_nodes} needs a hostfile (-H) that lists the hosts")
        return _local_pool(devices, opts, cores), devices
    if devices.kind == "cuda" and "CUDA_VISIBLE_DEVICES" in os.environ:
        notes.append("CUDA_VISIBLE_DEVICES is ignored with a hostfile: the hostfile's slots are the GPU ids")
    return read_hostfile(hostfile), devices_mod.LocalDevices(devices.kind, devices.source)


def _cores(opts: LaunchOptions) -> list[int]:
    usable = devices_mod.usable_cores()
    if not opts.bind_core_list:
        return usable
    cores = parse_core_list(opts.bind_core_list)
    missing = sorted(set(cores) - set(usable))
    if missing and not opts.hostfile:  # remote hosts' cores are theirs to check
        raise UsageError(f"--bind_core_list names cores this machine does not offer: {missing[:8]} (usable:"
                         f" {usable[0]}-{usable[-1]})")
    return cores


def _config(opts: LaunchOptions, world_size: int, notes: list[str]) -> tuple[str | None, BatchMath | None]:
    path, implicit = opts.config, False
    if path is None:
        path, implicit = find_config_in_args(opts.script_args), True
    if path is None:
        return None, None
    strict = not implicit or any(a.startswith("--deepspeed") for a in opts.script_args)
    try:
        config = load_config(path)
        if not has_batch_keys(config):
            raise UsageError(f"config {path} sets neither train_batch_size nor train_micro_batch_size_per_gpu")
    except UsageError as err:
        if strict:
            raise
        notes.append(f"the script's --config {path} was not used as the run config: {err}")
        return None, None
    # The whole config is checked here, before any worker starts, not in every worker after it imported torch; what
    # rank 0 would say about it (keys without effect, deprecations) is in the plan, so the dry run shows it.
    typed = parse_run_config(config, source=path)
    notes.extend(f"{path}: {warning}" for warning in typed.warnings)
    return str(Path(path).resolve()), resolve_batch(config, world_size)


def _check_script(opts: LaunchOptions) -> None:
    if opts.module and opts.no_python:
        raise UsageError("--module and --no_python exclude each other: a module needs python to run it")
    if opts.deepspeed_alias and opts.no_python:
        raise UsageError("--deepspeed-alias and --no_python exclude each other: the alias works inside python")
    if opts.module:
        return
    if opts.no_python:
        if not (shutil.which(opts.script) or os.access(opts.script, os.X_OK)):
            raise UsageError(f"--no_python: {opts.script} is not an executable file or a command on PATH")
    elif not Path(opts.script).is_file():
        raise UsageError(f"script {opts.script} does not exist")


def _remote_options(opts: LaunchOptions, backend: str) -> resolve_remote.RemoteOptions:
    return resolve_remote.RemoteOptions(
        backend=backend,
        python=opts.remote_python or opts.python,
        cwd=resolve_remote.check_cwd(opts.remote_cwd) if opts.remote_cwd else os.getcwd(),
        ssh_port=opts.ssh_port,
        launcher_args=opts.launcher_args,
    )


def plan_launch(opts: LaunchOptions) -> WorldPlan:
    notes: list[str] = []
    if opts.device == "cuda" and (opts.hostfile or DEEPSPEED_DEFAULT_HOSTFILE.is_file()):
        # The hostfile's hosts have the GPUs; a login node without any may launch them.
        devices = devices_mod.LocalDevices("cuda", "--device cuda with a hostfile")
    else:
        devices = devices_mod.detect(opts.device)
    cores = _cores(opts)
    backend = resolve_remote.backend_for(opts.launcher, notes)
    if backend == "slurm":
        if opts.hostfile:
            raise UsageError("--launcher slurm takes its hosts from the Slurm allocation: drop -H/--hostfile")
        alloc = slurm.allocation_from(dict(os.environ))
        pool = slurm.slurm_pool(alloc, devices.kind == "cuda", len(devices.tokens))
        devices = devices_mod.LocalDevices(devices.kind, devices.source)
    else:
        pool, devices = _pool(opts, devices, cores, notes)
    world = select(pool, opts.include, opts.exclude, opts.num_nodes, opts.num_gpus)
    launcher = "slurm" if backend == "slurm" else launcher_for(world, opts.force_multi)
    remote = None
    if launcher == "slurm":
        master_addr = opts.master_addr or next(iter(world))
        master_port = check_port(opts.master_port) if opts.master_port is not None else slurm.port_for_job(alloc.job_id)
        remote = resolve_remote.slurm_setup(_remote_options(opts, "slurm"), alloc, world, devices.kind == "cuda")
    elif launcher == "ssh":
        port = check_port(opts.master_port) if opts.master_port is not None else None
        targets, master_addr, master_port = resolve_remote.ssh_rendezvous(world, opts.ssh_port, opts.master_addr, port)
        remote = resolve_remote.ssh_setup(_remote_options(opts, "ssh"), targets, port_at_launch=port is None,
                                            address_at_launch=opts.master_addr is None)
    if launcher == "local":
        _check_script(opts)
        master_addr = opts.master_addr or "127.0.0.1"
        master_port = check_port(opts.master_port) if opts.master_port is not None else free_port(master_addr)
        local_workers = len(next(iter(world.values())))
        if devices.kind == "cpu" and local_workers > len(cores):
            notes.append(f"{local_workers} CPU workers share {len(cores)} core(s)")
    stray = sorted({a.split("=")[0] for a in opts.script_args} & set(_LAUNCHER_ONLY_FLAGS))
    if stray:
        notes.append(f"{', '.join(stray)} after the script go(es) to the script, not to dsrun: put dsrun flags first")
    world_size = sum(len(s) for s in world.values())
    config_path, batch = _config(opts, world_size, notes)
    if launcher != "local":
        blocks = " and core blocks" if opts.bind_cores_to_rank and not opts.bind_core_list else ""
        notes.append(f"OMP_NUM_THREADS{blocks}: each host's agent derives them from its own cores (a host's own"
                     f" OMP_NUM_THREADS, from its environment or an env file, is kept); the values shown come from"
                     f" this machine's {len(cores)}")
    spec = LaunchSpec(
        script=opts.script,
        script_args=list(opts.script_args),
        python=opts.python,
        module=opts.module,
        no_python=opts.no_python,
        no_local_rank=opts.no_local_rank,
        bind_cores=opts.bind_cores_to_rank,
        deepspeed_alias=opts.deepspeed_alias,
    )
    plan = build_plan(
        spec,
        world,
        devices,
        master_addr=master_addr,
        master_port=master_port,
        launcher=launcher,
        cores=cores,
        cores_named=bool(opts.bind_core_list),
        user_env=dict(os.environ),
        config_path=config_path,
        batch=batch,
        notes=notes,
    )
    return replace(plan, remote=remote) if remote else plan
