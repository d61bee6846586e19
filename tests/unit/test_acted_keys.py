"""Every config key declared as acted on is read by the runtime: runs that between them set every such key record
which attributes of the typed config the runtime reads. (A key declared as not acted on gets its note instead.)"""

import dataclasses

import pytest
import torch

import dsrun
from dsrun.config.declare import acted_paths
from dsrun.config.run_config import BATCH_KEYS, RunConfig
from dsrun.runtime import initialize as initialize_module


class Recorder:
    """Stands in for the typed config (and its sections): records every attribute the runtime reads."""

    def __init__(self, target, path: str, seen: set[str]):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_seen", seen)

    def __getattr__(self, name: str):
        value = getattr(self._target, name)
        full = f"{self._path}.{name}" if self._path else name
        self._seen.add(full)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return Recorder(value, full, self._seen)
        return value


RUNS = {
    "fp16 stage 2 offload": {
        "train_batch_size": 2, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 2}},
        "fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 8, "loss_scale_window": 10, "hysteresis": 2,
                 "consecutive_hysteresis": True, "min_loss_scale": 1},
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 2, "reduce_bucket_size": 1000, "allgather_bucket_size": 1000,
                              "ignore_unused_parameters": False,
                              "offload_optimizer": {"device": "cpu", "pin_memory": False}},
        "zero_allow_untested_optimizer": True, "prescale_gradients": False, "gradient_predivide_factor": 1.0,
        "communication_data_type": "fp32", "steps_per_print": 1, "wall_clock_breakdown": True, "dump_state": True,
        "dataloader_drop_last": True, "seed": 3,
        "checkpoint": {"tag_validation": "Fail", "keep_last": 2, "load_rng_state": False},
    },
    "bf16 stage 3 offload": {
        "train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "bfloat16": {"enabled": True},
        "zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 1000,
                              "stage3_gather_16bit_weights_on_model_save": True,
                              "offload_param": {"device": "cpu", "pin_memory": False}},
    },
    "amp stage 0 monitors": {
        "train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
        "amp": {"enabled": True, "opt_level": "O1"},
    },
    "activation checkpointing": {
        "train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
        "activation_checkpointing": {"cpu_checkpointing": True, "synchronize_checkpoint_boundary": True},
    },
}


def run(config: dict, tmp_path, seen: set[str], monkeypatch) -> None:
    parse = initialize_module.parse_run_config
    monkeypatch.setattr(initialize_module, "parse_run_config", lambda raw, source: Recorder(parse(raw, source=source),
                                                                                            "", seen))
    torch.manual_seed(0)
    data = [(torch.randn(4), torch.randn(1)) for _ in range(4)]
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    engine, _, loader, _ = dsrun.initialize(model=model, config=config, training_data=data)
    for x, y in loader:
        loss = torch.nn.functional.mse_loss(engine(x).float(), y)
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(tmp_path / "ckpt")
    engine.load_checkpoint(tmp_path / "ckpt")
    engine.save_16bit_model(tmp_path / "weights")
    if engine.monitor is not None:
        engine.monitor.close()  # no wandb run, atexit or signal hook may outlive the test


# Keys only code that needs several ranks reads, and the test that watches it read them.
MULTI_RANK = {"pipeline.schedule": "tests/e2e/test_pipeline.py: the schedule each run used"}

PIPELINE_RUN = {
    "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
    "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
    "pipeline": {"activation_checkpoint_interval": 1, "use_reentrant": True, "schedule": "GPipe"},
}


def run_pipeline(tmp_path, seen: set[str], monkeypatch) -> None:
    """A one-stage PipelineModule (the pipeline section's keys are read for pipelines only)."""
    from dsrun.pipe import PipelineModule

    parse = initialize_module.parse_run_config
    monkeypatch.setattr(initialize_module, "parse_run_config", lambda raw, source: Recorder(parse(raw, source=source),
                                                                                            "", seen))
    torch.manual_seed(0)
    model = PipelineModule([torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)], num_stages=1,
                           loss_fn=torch.nn.functional.mse_loss)
    engine, _, _, _ = dsrun.initialize(model=model, config=PIPELINE_RUN)
    engine.train_batch(iter([(torch.randn(2, 4), torch.randn(2, 1)) for _ in range(2)]))


def run_moe(seen: set[str], monkeypatch) -> None:
    """A model with an MoE layer (the expert layout key is read for such models only)."""
    from dsrun.moe.layer import MoE

    parse = initialize_module.parse_run_config
    monkeypatch.setattr(initialize_module, "parse_run_config", lambda raw, source: Recorder(parse(raw, source=source),
                                                                                            "", seen))
    model = MoE(4, torch.nn.Linear(4, 4), num_experts=2)
    config = {"train_micro_batch_size_per_gpu": 2, "use_data_before_expert_parallelism": True,
              "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}
    engine, _, _, _ = dsrun.initialize(model=model, config=config)
    output, l_aux, _ = engine(torch.randn(8, 4))
    engine.backward(output.sum() + l_aux)
    engine.step()


@pytest.fixture
def monitors_on(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    section = {"enabled": True, "output_path": str(tmp_path / "monitor"), "job_name": "acted"}
    RUNS["amp stage 0 monitors"].update(tensorboard=section, csv_monitor=section, wandb={"enabled": True})
    yield
    for key in ("tensorboard", "csv_monitor", "wandb"):
        RUNS["amp stage 0 monitors"].pop(key)


def test_every_acted_on_key_is_read_by_the_runtime(single_process, tmp_path, monkeypatch, monitors_on):
    seen: set[str] = set()
    for name, config in RUNS.items():
        run(config, tmp_path / name.replace(" ", "_"), seen, monkeypatch)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    run_pipeline(tmp_path / "pipeline", seen, monkeypatch)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    run_moe(seen, monkeypatch)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    # The batch keys are read through RunConfig.batch(); keys only multi-rank code reads are checked where it runs.
    unread = sorted(path for path, attribute in acted_paths(RunConfig)
                    if attribute not in seen and not (path in BATCH_KEYS and "batch" in seen)
                    and path not in MULTI_RANK)
    assert unread == [], f"declared acted on but never read by the runtime: {unread}"
