"""The worker the pipeline benchmark launches on 2 ranks (`dsrun --num_gpus 2` or `deepspeed`): 2 pipeline stages.

One trainer per implementation, each holding only its stage's half of the same layer list (the same weights: every
block draws its initial weights from its own seed), fed the same micro-batches:

    dsrun      dsrun.pipe.PipelineModule + dsrun.initialize + engine.train_batch(iterator), 1F1B (the default)
    hand       torch.distributed.pipelining PipelineStage + Schedule1F1B(scale_grads=True) on the stage's layers,
               clipping by the norm over both stages (one all_reduce of the squared norm), AdamW.step
    hand-fused the same with torch's fused AdamW (dsrun's choice on CPU): the pipeline's cost apart from the optimizer's
    deepspeed  deepspeed.pipe.PipelineModule + deepspeed.initialize + engine.train_batch(iterator)

After warm-up batches the implementations are timed in interleaved repetitions, the order rotating every repetition
(as bench/train_worker.py does); a repetition is several short rounds of each implementation in turn. One more,
untimed, batch counts each stage's parameter bytes and (dsrun, hand-written) model-state bytes. Rank 0 writes one
JSON file with both ranks' figures; pipeline_bench.py summarises.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # launched as a script: bench/ is on sys.path, the repository root is not
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench.interleaved import interleave  # noqa: E402
from bench.pipeline_bench import (  # noqa: E402
    ACCUMULATION,
    BLOCKS,
    HIDDEN,
    MICRO_BATCH,
    SEED,
    STAGES,
    WIDTH,
    pipe_config,
    stage_bounds,
)
from bench.train_setup import CLIP, adamw_options  # noqa: E402
from bench.workers import gather_and_write  # noqa: E402


class Block(nn.Module):
    """A pre-LayerNorm MLP block with a residual. Its weights come from its own seed (SEED + index) without touching
    the global RNG, so every implementation, on whichever rank builds it, gets the same block."""

    def __init__(self, index: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED + index)
            self.norm = nn.LayerNorm(WIDTH)
            self.up = nn.Linear(WIDTH, HIDDEN)
            self.down = nn.Linear(HIDDEN, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def block_bytes() -> list[int]:
    """Parameter bytes of every block of the whole model (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return [param_bytes(Block(i)) for i in range(BLOCKS)]


class Batches:
    """Micro-batch k of batch n is the same tensors for every implementation and on both ranks (the first stage
    reads the inputs, the last the labels): (inputs [MICRO_BATCH, WIDTH], class labels [MICRO_BATCH]). The label is
    the largest entry of a fixed random projection of the input: a rule to learn, so the loss goes down."""

    def __init__(self, count: int):
        g = torch.Generator().manual_seed(SEED + 1000)
        rule = torch.randn(WIDTH, WIDTH, generator=g)
        inputs = [[torch.randn(MICRO_BATCH, WIDTH, generator=g) for _ in range(ACCUMULATION)] for _ in range(count)]
        self.batches = [[(x, (x @ rule).argmax(dim=1)) for x in batch] for batch in inputs]

    def get(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches[n]


class DsrunPipeline:
    name = "dsrun"

    def __init__(self):
        import dsrun
        from dsrun.pipe import LayerSpec, PipelineModule

        self.module = PipelineModule([LayerSpec(Block, i) for i in range(BLOCKS)], num_stages=STAGES,
                                     loss_fn=loss_fn, partition_method="uniform")
        self.engine, _, _, _ = dsrun.initialize(model=self.module, model_parameters=self.module.parameters(),
                                                config=pipe_config())
        self.parts = self.module.partitions()
        self.stage_id = self.module.stage_id
        self.is_last = self.engine.is_last_stage()

    @property
    def schedule_name(self) -> str:
        # The engine keeps one torch schedule per batch shape (a private attribute, read for the record only).
        return ", ".join(sorted({type(s).__name__ for s in getattr(self.engine, "_stages", {}).values()})) or "?"

    def train_batch(self, micro: list) -> torch.Tensor | None:
        return self.engine.train_batch(iter(micro))

    def count_state(self, micro: list) -> tuple[torch.Tensor | None, dict | None]:
        self.engine.track_model_state = True
        loss = self.train_batch(micro)
        self.engine.track_model_state = False
        return loss, self.engine.model_state


class DeepSpeedPipeline:
    """DeepSpeed keeps its optimizer state in its own wrappers: only its parameters are counted."""

    name = "deepspeed"

    def __init__(self):
        import deepspeed
        from deepspeed.pipe import LayerSpec, PipelineModule

        deepspeed.init_distributed(dist_backend="gloo")  # adopts the process group already started
        self.module = PipelineModule([LayerSpec(Block, i) for i in range(BLOCKS)], num_stages=STAGES,
                                     loss_fn=loss_fn, partition_method="uniform")
        self.engine, _, _, _ = deepspeed.initialize(model=self.module, model_parameters=self.module.parameters(),
                                                    config=pipe_config())
        self.parts = list(self.module.parts)
        self.stage_id = self.module.stage_id
        self.is_last = self.engine.is_last_stage()
        self.schedule_name = "TrainSchedule"  # DeepSpeed's own 1F1B

    def train_batch(self, micro: list) -> torch.Tensor | None:
        return self.engine.train_batch(iter(micro))

    def count_state(self, micro: list) -> tuple[torch.Tensor | None, dict | None]:
        return self.train_batch(micro), None


class HandPipeline:
    """What a user writes by hand with torch.distributed.pipelining: the stage's layers in an nn.Sequential, one
    PipelineStage, Schedule1F1B over ACCUMULATION micro-batches, then clipping by the global norm and AdamW."""

    name = "hand"

    def __init__(self, **optimizer_options):
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B

        rank, world = dist.get_rank(), dist.get_world_size()
        self.stage_id = rank  # 2 ranks, 2 stages: no data parallelism
        self.parts = stage_bounds()
        start, stop = self.parts[self.stage_id], self.parts[self.stage_id + 1]
        self.module = nn.Sequential(*(Block(i) for i in range(start, stop)))
        stage = PipelineStage(self.module, self.stage_id, world, torch.device("cpu"))
        self.schedule = Schedule1F1B(stage, n_microbatches=ACCUMULATION, loss_fn=loss_fn, scale_grads=True)
        self.is_first, self.is_last = self.stage_id == 0, self.stage_id == world - 1
        self.params = list(self.module.parameters())
        self.optimizer = torch.optim.AdamW(self.params, **adamw_options(), **optimizer_options)
        self.schedule_name = type(self.schedule).__name__
        self.track_model_state = False
        self.model_state: dict | None = None

    def train_batch(self, micro: list) -> torch.Tensor | None:
        losses: list[torch.Tensor] = []
        if self.is_first:
            self.schedule.step(torch.cat([x for x, _ in micro]), return_outputs=False)
        elif self.is_last:
            self.schedule.step(target=torch.cat([y for _, y in micro]), losses=losses, return_outputs=False)
        else:
            self.schedule.step(return_outputs=False)
        with torch.no_grad():
            grads = [p.grad for p in self.params]
            squares = torch.stack(torch._foreach_norm(grads, 2)).pow(2).sum()
            dist.all_reduce(squares)  # the squared norms of both stages: the whole model's norm
            torch._foreach_mul_(grads, (CLIP / (squares.sqrt() + 1e-6)).clamp(max=1.0))
            self.optimizer.step()
            if self.track_model_state:
                from dsrun.runtime.memory import model_state_bytes

                self.model_state = model_state_bytes(self.module, {}, self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        return torch.stack(losses).mean() if losses else None

    def count_state(self, micro: list) -> tuple[torch.Tensor | None, dict | None]:
        self.track_model_state = True
        loss = self.train_batch(micro)
        self.track_model_state = False
        return loss, self.model_state


class HandFusedPipeline(HandPipeline):
    """The hand-written loop with torch's fused AdamW (dsrun's choice on CPU) instead of the default one: a note
    under the benchmark's table, telling the pipeline's cost apart from the optimizer's."""

    name = "hand-fused"

    def __init__(self):
        super().__init__(fused=True)


TRAINERS = {"dsrun": DsrunPipeline, "hand": HandPipeline, "deepspeed": DeepSpeedPipeline,
            "hand-fused": HandFusedPipeline}


class Runner:
    """One trainer and where it is in the data: every implementation sees batch n at its n-th train_batch."""

    def __init__(self, trainer, batches: Batches):
        self.trainer, self.batches = trainer, batches
        self.done = 0
        self.losses: list[torch.Tensor] = []

    def _keep(self, loss: torch.Tensor | None) -> None:
        # The last stage's loss: hand-written has it only there, dsrun and DeepSpeed send it to every stage.
        if self.trainer.is_last and loss is not None:
            self.losses.append(loss.detach())

    def run(self, count: int) -> None:
        for _ in range(count):
            self._keep(self.trainer.train_batch(self.batches.get(self.done)))
            self.done += 1

    def count_state(self) -> dict | None:
        loss, state = self.trainer.count_state(self.batches.get(self.done))
        self._keep(loss)
        self.done += 1
        return state


def measure(args, batches: Batches, rank: int) -> dict:
    runners: dict[str, Runner] = {}
    errors: dict[str, str] = {}
    for impl in args.impls:
        try:
            runners[impl] = Runner(TRAINERS[impl](), batches)
        except Exception as err:  # noqa: BLE001 - a peer that cannot run is reported, the others still measured
            if impl != "deepspeed":
                raise
            errors[impl] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
    for runner in runners.values():
        runner.run(args.warmup)  # the first batches build the stages' buffers and the optimizer state
    timed = interleave(runners, args.reps, args.rounds, args.batches_per_round, "pipeline", "s/batch", rank)
    layers = block_bytes()
    stages = {}
    for name, runner in runners.items():
        trainer = runner.trainer
        state = runner.count_state()
        start, stop = trainer.parts[trainer.stage_id], trainer.parts[trainer.stage_id + 1]
        stages[name] = {"stage": trainer.stage_id, "parts": list(trainer.parts), "layers": [start, stop],
                        "param_bytes": param_bytes(trainer.module), "stage_layer_bytes": sum(layers[start:stop]),
                        "model_state": state, "schedule": trainer.schedule_name}
    result = {
        **timed,
        "losses": {name: [float(x) for x in r.losses] for name, r in runners.items()},
        "stages": stages,
        "model_bytes": sum(layers),
        "errors": errors,
    }
    del runners
    gc.collect()
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", nargs="+", default=["dsrun", "hand"])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per repetition, each implementation in turn")
    parser.add_argument("--batches-per-round", type=int, default=2, help="timed train_batch calls per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--local_rank", type=int, default=None, help="passed by the launchers; LOCAL_RANK is used")
    return parser.parse_args()


def main() -> None:
    faulthandler.enable()  # an abort inside torch or gloo then shows the Python stack it happened under
    args = parse_args()
    dist.init_process_group("gloo")  # both engines and the hand-written schedule work in this one group
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != STAGES:
        raise SystemExit(f"pipeline_worker: {STAGES} ranks expected (one per stage), got {world}")
    batches = Batches(args.warmup + args.reps * args.rounds * args.batches_per_round + 1)
    facts = {
        "world": world,
        "stages": STAGES,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "parameters": sum(block_bytes()) // 4,
        "torch": torch.__version__,
    }
    mine = measure(args, batches, rank)
    gather_and_write(args.out, args.impls, facts, mine)


if __name__ == "__main__":
    main()
