"""Per-rank model-state bytes (parameters, gradients, optimizer state, fp32 masters) of dsrun's own engine.

Pure arithmetic, no torch: the dry run answers "will it fit?" on a login node. The numbers follow what the strategies
hold (dsrun/runtime/strategies), which is the ZeRO paper's accounting with dsrun's choices made explicit:

  stage 0   replicated.py: params and a flat gradient buffer in the parameters' dtype; fp32 masters only for half
            precision (an fp32 model is stepped in place); optimizer state fp32.
  stage 1   sharded.py: params and the flat gradient buffer whole; masters and optimizer state of this rank's rows.
  stage 2   sharded.py: params whole; gradients reduced into this rank's rows, kept in the parameters' dtype.
  stage 3   fully_sharded.py (FSDP2): fp32 parameter shards (they are the masters; half precision is the compute
            dtype of the gathered unit only), fp32 gradient shards, optimizer state of the shard.
  offload   (stages 1-3, offload_optimizer or offload_param): masters and optimizer state in host memory; at stage
            1-2 an fp32 model on a GPU then gets an fp32 master copy there (the step runs on the host); at stage 3
            FSDP2's CPU offload moves the parameter and gradient shards to the host too.
  step      half-precision (or offloaded) gradients are converted for the optimizer 1/16 at a time (engine.py
            _update): a transient fp32 buffer of 4 bytes x (gradient elements this rank steps) / 16.

Ψ is the parameter count of one pipeline stage (the model's divided evenly by the stage count), N the data-parallel
ranks (world size / pipeline stages).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Full-size fp32 state tensors per parameter element that torch's optimizers keep (step counters are scalars).
_STATES = {
    "adam": 2, "adamw": 2, "lamb": 2, "adamax": 2, "nadam": 2, "radam": 2, "adadelta": 2, "rprop": 2,
    "adagrad": 1, "asgd": 1,
}
ASSUMED_STATES = 2  # an optimizer the config does not name (the script builds it): counted as Adam
_CHUNKS = 16  # engine.py's _CHUNKS: the gradient conversion for the optimizer runs in this many pieces
_MIN_CHUNK = 1 << 16  # engine.py's _MIN_CHUNK (elements)
# Optimizers the engine steps chunk by chunk (element-wise; engine.py ELEMENTWISE): others convert every gradient
# at once.
_ELEMENTWISE = {"adam", "adamw", "sgd", "adagrad", "rmsprop", "adamax", "nadam", "radam", "adadelta", "asgd"}


@dataclass(frozen=True)
class TrainingShape:
    """What decides model-state memory, read from the config and the plan."""

    stage: int
    precision: str  # "fp32", "bf16", "fp16", or amp's "amp-O0".."amp-O3"
    optimizer: str  # the config's optimizer.type, lower-cased; "" when the script builds its own
    optimizer_states: int  # fp32 tensors the optimizer keeps per parameter tensor
    offload: bool  # the config asks for offload_optimizer / offload_param (cpu or nvme); acted on at stages 1-3
    accelerator: str  # "cuda" or "cpu": on the CPU, host and device memory are the same
    data_parallel: int  # N
    pipeline_stages: int = 1

    @property
    def half(self) -> bool:
        return self.precision in ("bf16", "fp16", "amp-O2", "amp-O3")

    @property
    def masters(self) -> bool:
        """Half precision keeps fp32 master weights, except amp O3 (pure fp16)."""
        return self.half and self.precision != "amp-O3"

    @property
    def param_bytes(self) -> int:
        return 2 if self.half else 4

    @property
    def state_bytes(self) -> int:
        """Optimizer state follows the tensors it steps: fp32 masters, or the half parameters themselves (amp O3)."""
        return 2 if self.precision == "amp-O3" else 4


@dataclass(frozen=True)
class ModelState:
    """Bytes one rank holds, split by kind and by where (device = GPU, or RAM on CPU nodes; host = RAM)."""

    params: int
    grads: int
    optimizer: int  # optimizer state without the masters
    masters: int  # fp32 master weights that are separate tensors (not the parameters themselves)
    step_transient: int  # the fp32 gradient chunk alive during the optimizer step
    device: int  # sum of the above held on the device
    host: int  # ... held in host memory (offload)
    formula: str

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.masters + self.step_transient

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def optimizer_states(type_name: str, params: dict) -> int | None:
    """Full-size state tensors per parameter of a config optimizer; None for one not known here."""
    name = type_name.lower()
    if name == "sgd":
        return 1 if params.get("momentum", 0) else 0
    if name == "rmsprop":
        return 1 + bool(params.get("momentum", 0)) + bool(params.get("centered", False))
    if name in ("adam", "adamw") and params.get("amsgrad", False):
        return 3
    return _STATES.get(name)


def estimate(shape: TrainingShape, parameters: int, frozen: int = 0) -> ModelState:
    """Per-rank model state for `parameters` trainable ones in the whole model (split over the pipeline stages), and
    `frozen` ones (requires_grad False: weights only, no gradient or optimizer state)."""
    psi = -(-parameters // shape.pipeline_stages)  # the largest stage when the count does not divide
    fixed = -(-frozen // shape.pipeline_stages)
    stage = shape.stage
    share = psi if stage == 0 else -(-psi // shape.data_parallel)  # elements this rank's optimizer steps
    away = _steps_on_host(shape)
    if stage == 3:
        # fully_shard shards every parameter of the module, frozen ones too.
        params, grads, masters = 4 * (share + -(-fixed // shape.data_parallel)), 4 * share, 0
    else:
        p = shape.param_bytes
        params = p * (psi + fixed)
        grads = p * (share if stage == 2 else psi)
        # A separate fp32 master: half precision, or an fp32 model whose step runs in host memory.
        masters = 4 * share if shape.masters or away else 0
    optimizer = shape.optimizer_states * shape.state_bytes * share
    transient = 0
    if _converts(shape):
        chunked = not shape.optimizer or shape.optimizer in _ELEMENTWISE  # a script's own: assumed Adam-like
        transient = 4 * (min(share, max(share // _CHUNKS, _MIN_CHUNK)) if chunked else share)
    on_host = 0
    if away:
        on_host = optimizer + masters + transient + (params + grads if stage == 3 else 0)
    total = params + grads + optimizer + masters + transient
    return ModelState(params=params, grads=grads, optimizer=optimizer, masters=masters, step_transient=transient,
                      device=total - on_host, host=on_host, formula=formula(shape))


def _steps_on_host(shape: TrainingShape) -> bool:
    """Offload moves state off a GPU; on a CPU node host and device memory are one and nothing moves."""
    return shape.offload and shape.stage > 0 and shape.accelerator == "cuda"


def _converts(shape: TrainingShape) -> bool:
    """Whether the engine converts gradients for the optimizer (another dtype or device than the master's)."""
    return shape.stage < 3 and (shape.masters or _steps_on_host(shape))


def formula(shape: TrainingShape) -> str:
    """The per-rank bytes as an expression in Ψ and N, e.g. "2Ψ + 2Ψ + (4Ψ + 8Ψ)/N"."""
    p, states = shape.param_bytes, shape.optimizer_states * shape.state_bytes
    masters = shape.stage < 3 and (shape.masters or _steps_on_host(shape))
    state = f"4Ψ + {states}Ψ" if masters else f"{states}Ψ"
    sharded = f"({state})/N" if "+" in state else f"{state}/N"
    text = {
        0: f"{p}Ψ + {p}Ψ + {state}",
        1: f"{p}Ψ + {p}Ψ + {sharded}",
        2: f"{p}Ψ + ({p}Ψ + {state})/N",
        3: f"(4Ψ + 4Ψ + {states}Ψ)/N",
    }[shape.stage]
    if _converts(shape):  # the fp32 gradient chunk the engine converts for the optimizer
        text += " + 4Ψ/16 while stepping" if shape.stage == 0 else " + 4Ψ/16N while stepping"
    return text
