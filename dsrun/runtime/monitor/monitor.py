"""The Monitor: rank 0's recorder. Hands each optimizer step to the writers and writes the run record at close."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

from dsrun.console import say
from dsrun.runtime.monitor.shutdown import CloseOnExit
from dsrun.runtime.monitor.summary import SUMMARY_JSON, RunSummary, write_json


class Writer(Protocol):
    def log(self, stats) -> None: ...

    def close(self) -> None: ...


class Monitor:
    """`log(stats)` once per optimizer step; `close()` once at the end (called by itself at exit or on a signal)."""

    def __init__(self, *, run_dirs: list[Path], writers: list[Writer], summary: RunSummary, device,
                 config_hash: str, world_size: int, plot: bool = True):
        self.run_dirs = run_dirs
        self._writers = writers
        self._summary = summary
        self._device = device
        self._config_hash = config_hash
        self._world_size = world_size
        self._plot = plot
        self._closed = False
        self._exit_hooks = CloseOnExit(self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    def install_exit_hooks(self) -> None:
        self._exit_hooks.install()

    def log(self, stats) -> None:
        if self._closed:  # a step after a signal closed the monitor (the script's handler let it go on)
            return
        with self._exit_hooks.deferring_signals():
            for writer in self._writers:
                writer.log(stats)
            self._summary.update(stats)

    def close(self, ended_by: str = "exit") -> None:
        if self._closed:
            return
        self._closed = True
        self._exit_hooks.uninstall()
        for writer in self._writers:
            try:
                writer.close()
            except Exception as err:  # one writer failing must not cost the others or the summary
                say(f"warning: closing {type(writer).__name__} failed: {err}")
        summary = self._summary.to_dict(ended_by=ended_by, device=self._device, config_hash=self._config_hash,
                                        world_size=self._world_size)
        for run_dir in self.run_dirs:
            write_json(run_dir / SUMMARY_JSON, summary)
        if self._plot and summary["steps"] and importlib.util.find_spec("matplotlib") is not None:
            self._plot_curves()
        say(f"run record in {', '.join(str(d) for d in self.run_dirs)}")

    def _plot_curves(self) -> None:
        from dsrun.tools.plot import plot_run

        for run_dir in self.run_dirs:
            try:
                plot_run(run_dir)
            except Exception as err:  # a plot is a convenience: never fail the run's teardown over it
                say(f"warning: no training_curves.png in {run_dir}: {err}")
