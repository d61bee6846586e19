"""The monitor's writers with made-up steps: CSV rows, TensorBoard events read back, wandb's arguments and files."""

from __future__ import annotations

import csv
import importlib.machinery
import sys
import time
import types

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dsrun.errors import UsageError
from dsrun.runtime.monitor import build_monitor
from dsrun.runtime.monitor.wandb_writer import wandb_mode
from dsrun.tools.metrics import COLUMNS, read_metrics
from tests.unit.monitor_helpers import build, close_enough, config, placement, step


def test_csv_has_a_header_and_one_flushed_row_per_step(tmp_path, monitors):
    monitor = build(monitors, config(tmp_path, wall_clock_breakdown=True))
    path = tmp_path / "job" / "training_metrics.csv"
    for n in (1, 2, 3):
        monitor.log(step(n, breakdown=True, loss_scale=65536.0, applied=n != 2))
        rows = list(csv.reader(path.open()))  # read while the run goes on: each step is on disk already
        assert len(rows) == n + 1
    assert tuple(rows[0]) == COLUMNS
    row = dict(zip(COLUMNS, rows[3], strict=True))
    assert row["step"] == "3" and row["samples"] == "48"
    assert float(row["loss"]) == 2.0 / 3 and float(row["lr"]) == 3e-3 and float(row["grad_norm"]) == 3.5
    assert float(row["loss_scale"]) == 65536.0 and float(row["forward_ms"]) == 30.0
    assert [r[COLUMNS.index("applied")] for r in rows[1:]] == ["1", "0", "1"]
    metrics = read_metrics(path)
    assert metrics["step"] == [1, 2, 3] and metrics["samples"] == [16, 32, 48]


def test_csv_leaves_absent_values_empty(tmp_path, monitors):
    monitor = build(monitors, config(tmp_path))
    monitor.log(step(1))  # no fp16, no wall_clock_breakdown
    rows = list(csv.reader((tmp_path / "job" / "training_metrics.csv").open()))
    row = dict(zip(COLUMNS, rows[1], strict=True))
    assert row["loss_scale"] == row["forward_ms"] == row["backward_ms"] == row["optimizer_ms"] == ""


def test_tensorboard_events_carry_deepspeed_tags_against_samples_and_steps(tmp_path, monitors):
    monitor = build(monitors, config(tmp_path, csv=False, tensorboard=True, wall_clock_breakdown=True))
    for n in (1, 2, 3):
        monitor.log(step(n, breakdown=True))
    monitor.close()
    events = EventAccumulator(str(tmp_path / "job"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for name in ("train_loss", "lr", "grad_norm", "samples_per_sec", "step_time_s", "elapsed_time_ms_forward",
                 "elapsed_time_ms_backward", "elapsed_time_ms_step"):
        assert {f"Train/Samples/{name}", f"Train/Steps/{name}"} <= tags
    assert "Train/Samples/loss_scale" not in tags  # fp16 only, as in DeepSpeed
    by_samples = events.Scalars("Train/Samples/train_loss")
    assert [e.step for e in by_samples] == [16, 32, 48]
    assert all(close_enough(e.value, 2.0 / n) for e, n in zip(by_samples, (1, 2, 3), strict=True))
    assert [e.step for e in events.Scalars("Train/Steps/lr")] == [1, 2, 3]
    assert close_enough(events.Scalars("Train/Samples/elapsed_time_ms_forward")[2].value, 30.0)


def test_tensorboard_gets_the_run_record_too(tmp_path, monitors):
    # With tensorboard alone, its directory is the run directory: the CSV and summary are there as well.
    monitor = build(monitors, config(tmp_path, csv=False, tensorboard=True))
    monitor.log(step(1))
    monitor.close()
    names = {p.name for p in (tmp_path / "job").iterdir()}
    assert {"training_metrics.csv", "summary.json", "config_resolved.json"} <= names
    assert any(name.startswith("events.out.tfevents.") for name in names)


def test_missing_tensorboard_is_a_usage_error_on_every_rank(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # find_spec then reports it absent
    cfg = config(tmp_path, tensorboard=True)
    for rank in (0, 1):
        with pytest.raises(UsageError, match="pip install tensorboard"):
            build_monitor(cfg, placement(rank=rank))
    assert not (tmp_path / "job").exists()


class FakeRun:
    def __init__(self, kwargs):
        self.kwargs = kwargs
        self.dir = kwargs.get("dir", "wandb-dir")
        self.logged = []
        self.finished = 0

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished += 1


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(kwargs))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    empty_netrc = tmp_path / "netrc"
    empty_netrc.write_text("")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(empty_netrc))
    return module


def test_wandb_gets_deepspeeds_arguments_and_samples_as_its_step(tmp_path, monitors, fake_wandb, capsys):
    monitor = build(monitors, config(tmp_path, wandb=True))
    run = fake_wandb.runs[0]
    assert run.kwargs["project"] == "proj" and run.kwargs["group"] == "grp" and run.kwargs["entity"] == "team"
    assert run.kwargs["mode"] == "offline"  # no API key anywhere: never stop to ask for a login
    assert run.kwargs["dir"] == str(tmp_path / "job")
    assert run.kwargs["config"]["train_batch_size"] == 16
    assert "logging offline" in capsys.readouterr().err
    monitor.log(step(2))
    step_number, values = run.logged[0]
    assert step_number == 32 and values["Train/Samples/train_loss"] == 1.0 and values["Train/step"] == 2
    monitor.close()
    monitor.close()
    assert run.finished == 1


def test_wandb_mode_follows_the_environment(fake_wandb, monkeypatch, tmp_path):
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() is None  # wandb's own default (online)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_mode() is None  # `wandb login` wrote a key


def test_missing_wandb_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(UsageError, match="pip install wandb"):
        build_monitor(config(tmp_path, csv=False, wandb=True), placement(rank=1))


def test_real_wandb_logs_offline_into_the_run_directory(tmp_path, monitors, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # leave pytest's output capture alone
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.chdir(tmp_path)
    monitor = build(monitors, config(tmp_path, csv=False, wandb=True))
    for n in (1, 2):
        monitor.log(step(n))
    monitor.close()
    # wandb alone: DeepSpeed's default directory, relative to the working directory.
    assert monitor.run_dirs == [tmp_path / "DeepSpeedJobName"]
    # wandb's service process writes the record file; give it a bounded moment to finish after close().
    deadline = time.monotonic() + 15
    while True:
        records = list(monitor.run_dirs[0].glob("wandb/offline-run-*/run-*.wandb"))
        done = len(records) == 1 and b"Train/Samples/train_loss" in records[0].read_bytes()
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(records) == 1
    assert b"Train/Samples/train_loss" in records[0].read_bytes()
