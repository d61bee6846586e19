"""The dry run's memory estimate: the plan + the run's config + the model's size -> the `memory` object.

Fields of the object (bytes unless named otherwise; per rank unless named otherwise):
  parameters, parameters_from    the model's trainable parameter count and where it came from ("--model-params"
                 or "--model"); frozen: --model's parameters with requires_grad false (weights only)
  world_size, pipeline_stages, data_parallel    N = data_parallel = world_size / pipeline_stages
  stage, precision, optimizer, optimizer_states, offload    what the config says (or what was assumed: `notes`);
                 offload: asked for (acted on at stages 1-3)
  model_state    {params, grads, optimizer, masters, step_transient, device, host, total, formula}: see
                 model_state.py; `device` is what one rank holds on its GPU (on CPU nodes: in RAM), `host` in RAM
  largest_layer  {name, parameters, bytes} of the biggest leaf module (--model only)
  stage3_gathered    stage 3: parameters one rank gathers while computing (the root unit and two block units: the
                 running one and the prefetched one, in the compute dtype) (--model only; 0 otherwise)
  activations    {input, without_checkpointing, with_checkpointing} of one micro-batch (--model with --model-input)
  need           {device, host}: model state + activations (without checkpointing) + gathered parameters
  fits           the verdict for the configured stage: list of {fits (true/false/null: unknown), where, needs, has,
                 hosts, ranks (sharing `needs` on each of those hosts), with_checkpointing (fits only with activation
                 checkpointing), unknown_because}
  unsupported    why the configured stage cannot run as planned (a pipeline at ZeRO 2-3), else null
  stages         (--memory-table) the same model_state / need / fits / unsupported for stages 0-3
  nodes          [{host, ranks, device, host_ram, local}]: the memory each node offers (null: unknown); device is one
                 GPU's, null on CPU nodes, whose ranks share host_ram
  unit_elements  stage 3's unit size (stage3_prefetch_bucket_size) the probe grouped blocks by
  notes          assumptions made (no config, an optimizer the config does not name, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dsrun.config import load_config, parse_run_config
from dsrun.errors import UsageError
from dsrun.launcher.memory import probe_client
from dsrun.launcher.memory.device_memory import NodeMemory, node_memory
from dsrun.launcher.memory.model_state import ASSUMED_STATES, TrainingShape, estimate, optimizer_states
from dsrun.launcher.plan.world import WorldPlan

COMPUTE_DTYPE = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "amp-O0": "fp32", "amp-O1": "fp16",
                 "amp-O2": "fp16", "amp-O3": "fp16"}
_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class MemoryRequest:
    """The memory flags of the dry run."""

    model_params: int | None = None  # --model-params
    model: str | None = None  # --model MODULE:FACTORY
    model_input: str | None = None  # --model-input
    pipeline_stages: int = 1
    device_memory: int | None = None
    host_memory: int | None = None
    all_stages: bool = False  # --memory-table


def training_shape(plan: WorldPlan, pipeline_stages: int, notes: list[str]) -> tuple[TrainingShape, int]:
    """The shape the config describes, and stage 3's unit size (stage3_prefetch_bucket_size)."""
    if plan.world_size % pipeline_stages:
        raise UsageError(f"--pipeline-stages {pipeline_stages} does not divide the world of {plan.world_size} ranks")
    data_parallel = plan.world_size // pipeline_stages
    if plan.config_path is None:
        notes.append("no config: ZeRO stage 0, fp32 and an Adam-like optimizer (2 states) assumed")
        return TrainingShape(0, "fp32", "", ASSUMED_STATES, False, plan.accelerator, data_parallel,
                             pipeline_stages), 50_000_000
    cfg = parse_run_config(load_config(plan.config_path), source=plan.config_path)
    if cfg.fp16.enabled:
        precision = "fp16"
    elif cfg.bf16.enabled:
        precision = "bf16"
    elif cfg.amp.enabled:
        precision = f"amp-{cfg.amp.opt_level}"
    else:
        precision = "fp32"
    zero = cfg.zero
    # Asked for even at stage 0 (where it does nothing): the --memory-table rows of stages 1-3 then offload.
    offload = any(o is not None and o.device != "none" for o in (zero.offload_optimizer, zero.offload_param))
    name = cfg.optimizer.type.lower() if cfg.optimizer is not None else ""
    states = optimizer_states(name, dict(cfg.optimizer.params)) if cfg.optimizer is not None else None
    if states is None:
        states = ASSUMED_STATES
        notes.append(f"optimizer {cfg.optimizer.type!r}: state size not known to dsrun, counted as Adam's (2 fp32"
                     " states per parameter)" if cfg.optimizer is not None else
                     "the config names no optimizer (the script builds it): counted as Adam (2 fp32 states per"
                     " parameter)")
    if pipeline_stages > 1:
        notes.append(f"pipeline: the parameters are taken as split evenly over {pipeline_stages} stages")
    shape = TrainingShape(zero.stage, precision, name, states, offload, plan.accelerator, data_parallel,
                          pipeline_stages)
    return shape, int(zero.prefetch_bucket_size)


def _activation_notes(plan: WorldPlan, request: MemoryRequest) -> list[str]:
    notes = []
    assert request.model_input is not None
    first = request.model_input.split(",")[0].partition(":")[0].lower().split("x")[0].strip()
    micro = plan.batch.train_micro_batch_size_per_gpu if plan.batch else None
    if micro is not None and first.isdigit() and int(first) != micro:
        notes.append(f"--model-input's first dimension is {first}, the config's micro batch"
                     f" (train_micro_batch_size_per_gpu) {micro}: the activations are for the shape given")
    if request.pipeline_stages > 1:
        notes.append("activations are those of the whole model for one micro-batch; a pipeline stage holds its own"
                     " layers' share for each micro-batch in flight (1F1B: up to the stage count)")
    return notes


def _unknown_because(node: NodeMemory, where: str) -> str:
    if where == "GPU":
        return ("nvidia-smi gave no memory for this machine's GPUs: give --device-memory" if node.local else
                "remote host, not contacted: give --device-memory")
    flag = "--host-memory" if where == "host RAM" else "--device-memory (a CPU node's RAM)"
    return f"remote host, not contacted: give {flag}"


def _verdicts(nodes: list[NodeMemory], device: int, host: int, lean_device: int, accelerator: str) -> list[dict]:
    """Per node: does `device` fit one GPU and ranks x `host` the RAM (CPU nodes: ranks x both, the RAM)?
    `lean_device`: the device need with activation checkpointing. Nodes with the same verdict are grouped."""
    groups: dict[tuple, list[str]] = {}
    for node in nodes:
        if accelerator == "cuda":
            checks = [("GPU", device, lean_device, node.device)]
            if host:
                checks.append(("host RAM", node.ranks * host, node.ranks * host, node.host_ram))
        else:
            checks = [("RAM", node.ranks * (device + host), node.ranks * (lean_device + host), node.host_ram)]
        for where, needs, lean, has in checks:
            fits = None if has is None else needs <= has
            lean_fits = has is not None and not fits and lean <= has
            ranks = 1 if where == "GPU" else node.ranks
            why = _unknown_because(node, where) if has is None else ""
            groups.setdefault((where, needs, has, fits, lean_fits, why, ranks), []).append(node.host)
            if fits is False and not lean_fits:
                break
    return [{"fits": fits, "where": where, "needs": needs, "has": has, "with_checkpointing": lean_fits,
             "unknown_because": why or None, "ranks": ranks, "hosts": hosts}
            for (where, needs, has, fits, lean_fits, why, ranks), hosts in groups.items()]


def build(plan: WorldPlan, request: MemoryRequest) -> dict:
    """The `memory` object (see the module docstring); with --model this runs the model probe (seconds)."""
    notes: list[str] = []
    shape, unit_elements = training_shape(plan, request.pipeline_stages, notes)
    probe = None
    if request.model:
        probe = probe_client.probe(request.model, request.model_input, COMPUTE_DTYPE[shape.precision], unit_elements)
    parameters = probe["trainable"] if probe else request.model_params
    assert parameters is not None
    frozen = probe["parameters"] - probe["trainable"] if probe else 0
    if frozen:
        notes.append(f"{frozen} frozen parameters (requires_grad false) count as weights only: no gradients, no"
                     " optimizer state")
    compute = _DTYPE_BYTES[COMPUTE_DTYPE[shape.precision]]
    activations = None
    if probe and probe.get("activations"):
        saved = probe["activations"]
        activations = {"input": request.model_input, "without_checkpointing": saved["saved_bytes"],
                       "with_checkpointing": saved["checkpointed_bytes"]}
        notes.extend(_activation_notes(plan, request))
    nodes = node_memory(plan, request.device_memory, request.host_memory)

    def one_stage(stage: int) -> dict:
        staged = replace(shape, stage=stage)
        state = estimate(staged, parameters, frozen)
        gathered = 0
        if probe and stage == 3:
            gathered = compute * (probe["root_unit_parameters"] + 2 * probe["largest_unit_parameters"])
            gathered = min(gathered, compute * probe["parameters"])
        act = activations["without_checkpointing"] if activations else 0
        lean = activations["with_checkpointing"] if activations else 0
        device = state.device + act + gathered
        entry = {"stage": stage, "model_state": state.to_dict(), "stage3_gathered": gathered,
                 "need": {"device": device, "host": state.host},
                 "fits": _verdicts(nodes, device, state.host, device - act + lean, plan.accelerator)}
        if request.pipeline_stages > 1 and stage >= 2:
            entry["unsupported"] = "dsrun's pipeline runs with ZeRO stage 0 or 1 only"
        return entry

    configured = one_stage(shape.stage)
    largest = None
    if probe:
        layer = probe["largest_layer"]
        largest = {**layer, "bytes": layer["parameters"] * (4 if shape.stage == 3 else shape.param_bytes)}
    return {
        "parameters": parameters,
        "parameters_from": "--model" if probe else "--model-params",
        "frozen": frozen,
        "world_size": plan.world_size,
        "pipeline_stages": shape.pipeline_stages,
        "data_parallel": shape.data_parallel,
        "stage": shape.stage,
        "precision": shape.precision,
        "optimizer": shape.optimizer or None,
        "optimizer_states": shape.optimizer_states,
        "offload": shape.offload,
        "model_state": configured["model_state"],
        "largest_layer": largest,
        "stage3_gathered": configured["stage3_gathered"],
        "activations": activations,
        "need": configured["need"],
        "fits": configured["fits"],
        "unsupported": configured.get("unsupported"),
        "stages": [configured if s == shape.stage else one_stage(s) for s in range(4)] if request.all_stages else None,
        "nodes": [vars(n) for n in nodes],
        "unit_elements": unit_elements,
        "notes": notes,
    }

