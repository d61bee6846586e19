"""The run record: summary.json, config_resolved.json, the run-directory rule, closing once, signals in-process."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal

import pytest

from dsrun.config import parse_run_config
from dsrun.errors import UsageError
from dsrun.runtime.monitor import build_monitor, monitor_enabled
from dsrun.runtime.monitor.summary import config_sha256
from tests.unit.monitor_helpers import BATCH, build, config, placement, step


def summary(tmp_path, job="job"):
    return json.loads((tmp_path / job / "summary.json").read_text())


def test_summary_totals(tmp_path, monitors):
    cfg = config(tmp_path)
    monitor = build(monitors, cfg)
    for n in (1, 2, 3, 4):
        monitor.log(step(n, loss={1: 3.0, 2: 0.5, 3: float("nan"), 4: 0.75}[n], applied=n != 3))
    monitor.close()
    data = summary(tmp_path)
    assert data["steps"] == 4 and data["samples"] == 64 and data["train_batch_size"] == 16
    assert data["final_loss"] == 0.75
    assert data["best_loss"] == 0.5 and data["best_loss_step"] == 2  # the NaN step is not a best
    assert data["final_lr"] == 4e-3
    assert data["samples_per_sec"] == 32.0  # 16 samples per 0.5 s step
    assert data["samples_per_sec_after_first_step"] == 32.0 and data["mean_step_time_s"] == 0.5
    assert data["peak_memory_bytes"] > 10 * 2**20 and data["peak_memory_source"].startswith("peak RSS")
    assert 0 <= data["wall_time_s"] < 60 and data["ended_by"] == "exit" and data["world_size"] == 2
    assert data["config_sha256"] == config_sha256(cfg.raw)


def test_summary_of_a_run_ending_on_a_nan_and_of_one_without_steps(tmp_path, monitors):
    monitor = build(monitors, config(tmp_path, job="a"))
    monitor.log(step(1, loss=float("inf")))
    monitor.close()
    data = summary(tmp_path, "a")  # strict JSON: no NaN/Infinity tokens
    assert data["final_loss"] is None and data["best_loss"] is None
    assert data["samples_per_sec_after_first_step"] is None
    build(monitors, config(tmp_path, job="b")).close()
    data = summary(tmp_path, "b")
    assert data["steps"] == 0 and data["samples_per_sec"] is None and data["final_loss"] is None


def test_config_hash_is_of_the_canonical_config():
    raw = {"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"lr": 0.1, "betas": [0.9, 0.99]}}}
    canonical = '{"optimizer":{"params":{"betas":[0.9,0.99],"lr":0.1},"type":"Adam"},"train_batch_size":8}'
    assert config_sha256(raw) == hashlib.sha256(canonical.encode()).hexdigest()
    reordered = {"optimizer": {"params": {"lr": 0.1, "betas": [0.9, 0.99]}, "type": "Adam"}, "train_batch_size": 8}
    assert config_sha256(reordered) == config_sha256(raw)
    assert config_sha256({**raw, "train_batch_size": 16}) != config_sha256(raw)


def test_config_snapshot_is_written_at_start_and_resolves_the_batch(tmp_path, monitors):
    build(monitors, config(tmp_path, steps_per_print=7))
    snapshot = json.loads((tmp_path / "job" / "config_resolved.json").read_text())
    assert snapshot["steps_per_print"] == 7 and snapshot["csv_monitor"]["enabled"] is True
    assert (snapshot["train_batch_size"], snapshot["train_micro_batch_size_per_gpu"],
            snapshot["gradient_accumulation_steps"]) == (16, 4, 2)
    assert parse_run_config(snapshot).batch(2).train_batch_size == 16  # a config that reproduces the run


def test_close_happens_once_and_later_steps_are_ignored(tmp_path, monitors, capsys):
    monitor = build(monitors, config(tmp_path))
    monitor.log(step(1))
    monitor.close()
    written = (tmp_path / "job" / "summary.json").stat().st_mtime_ns
    monitor.close("SIGTERM")
    monitor.log(step(2))
    assert summary(tmp_path)["ended_by"] == "exit"
    assert (tmp_path / "job" / "summary.json").stat().st_mtime_ns == written
    assert len(list(csv.reader((tmp_path / "job" / "training_metrics.csv").open()))) == 2
    assert capsys.readouterr().err.count("run record in") == 1


def test_only_rank_0_records_and_only_when_a_section_is_enabled(tmp_path):
    cfg = config(tmp_path)
    assert monitor_enabled(cfg)
    assert build_monitor(cfg, placement(rank=1)) is None
    assert not (tmp_path / "job").exists()
    plain = parse_run_config(BATCH)
    assert not monitor_enabled(plain) and build_monitor(plain, placement()) is None


def test_each_distinct_directory_gets_the_record_and_events_stay_with_tensorboard(tmp_path, monitors):
    raw = {**BATCH, "csv_monitor": {"enabled": True, "output_path": str(tmp_path / "csv"), "job_name": "j"},
           "tensorboard": {"enabled": True, "output_path": str(tmp_path / "tb"), "job_name": "j"}}
    monitor = build(monitors, parse_run_config(raw))
    monitor.log(step(1))
    monitor.close()
    assert monitor.run_dirs == [tmp_path / "csv" / "j", tmp_path / "tb" / "j"]
    for run_dir in monitor.run_dirs:
        assert {"training_metrics.csv", "summary.json", "config_resolved.json"} <= {p.name for p in run_dir.iterdir()}
    assert list((tmp_path / "tb" / "j").glob("events.out.tfevents.*"))
    assert not list((tmp_path / "csv" / "j").glob("events.out.tfevents.*"))


def test_relative_output_path_is_fixed_at_build_time(tmp_path, monitors, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = {**BATCH, "csv_monitor": {"enabled": True, "output_path": "runs", "job_name": "exp"}}
    monitor = build(monitors, parse_run_config(raw))
    monkeypatch.chdir("/")  # a script that changes directory later still writes where it started
    monitor.log(step(1))
    monitor.close()
    assert (tmp_path / "runs" / "exp" / "summary.json").is_file()


def test_an_uncreatable_run_directory_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("")
    raw = {**BATCH, "csv_monitor": {"enabled": True, "output_path": str(tmp_path / "file"), "job_name": "j"}}
    with pytest.raises(UsageError, match="cannot create the run directory"):
        build_monitor(parse_run_config(raw), placement())


def test_sigterm_closes_then_chains_to_the_scripts_handler(tmp_path, monitors):
    seen = []

    def record(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        monitor = build(monitors, config(tmp_path))
        monitor.log(step(1))
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        assert monitor.closed and summary(tmp_path)["ended_by"] == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is record
        os.kill(os.getpid(), signal.SIGTERM)  # the script's handler is back in place; no second close
        assert seen == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_signal_during_a_step_is_acted_on_after_the_row_is_written(tmp_path, monitors):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        monitor = build(monitors, config(tmp_path))

        class SignalMidRow:
            def log(self, stats):
                os.kill(os.getpid(), signal.SIGTERM)
                assert not monitor.closed  # deferred: the other writers still get this step

            def close(self):
                pass

        monitor._writers.insert(0, SignalMidRow())
        monitor.log(step(1))
        assert seen == [signal.SIGTERM] and monitor.closed
        data = summary(tmp_path)
        assert data["ended_by"] == "SIGTERM" and data["steps"] == 1
        assert len(list(csv.reader((tmp_path / "job" / "training_metrics.csv").open()))) == 2
    finally:
        signal.signal(signal.SIGTERM, previous)
