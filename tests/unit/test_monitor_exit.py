"""A monitored process that exits, or is stopped the way dsrun's teardown stops it, leaves its summary once.

The child builds a real Monitor (csv_monitor) without torch: the monitor's bookkeeping must not need it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import sys, time, types
    from dsrun.config import parse_run_config
    from dsrun.runtime.monitor import build_monitor

    cfg = parse_run_config({"train_batch_size": 8, "csv_monitor": {"enabled": True, "output_path": sys.argv[1],
                                                                   "job_name": "job"}})
    where = types.SimpleNamespace(rank=0, world_size=1, device=types.SimpleNamespace(type="cpu"))
    monitor = build_monitor(cfg, where, plot=sys.argv[2] == "plot")
    for n in (1, 2, 3):
        monitor.log(types.SimpleNamespace(step=n, samples=8 * n, loss=1.0 / n, lr=0.1, grad_norm=1.0,
                                          loss_scale=None, applied=True, skipped_steps=0, step_time_s=0.25,
                                          samples_per_sec=32.0))
    print("torch imported:", "torch" in sys.modules, flush=True)
    if sys.argv[3] == "wait":
        time.sleep(60)
""")


@pytest.mark.parametrize(("ending", "plot"), [("exit", "plot"), ("SIGTERM", "plot"), ("SIGINT", "no-plot")])
def test_summary_is_written_once_however_the_process_ends(tmp_path, ending, plot):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), plot, "exit" if ending == "exit" else "wait"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "torch imported: False"
        if ending != "exit":
            child.send_signal(getattr(signal, ending))
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    if ending == "exit":
        assert child.returncode == 0, stderr
    elif ending == "SIGTERM":
        assert child.returncode == -signal.SIGTERM, stderr  # still dies of the signal, as the launcher expects
    else:
        # Python's own SIGINT behaviour, chained: KeyboardInterrupt, then an exit by SIGINT (Python 3.8+).
        assert child.returncode == -signal.SIGINT and "KeyboardInterrupt" in stderr, stderr
    assert stderr.count("run record in") == 1, stderr
    data = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert data["ended_by"] == ending and data["steps"] == 3 and data["samples"] == 24
    assert data["samples_per_sec"] == 32.0
    assert (tmp_path / "job" / "training_curves.png").exists() == (plot == "plot")
