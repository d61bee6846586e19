"""World 4 across 2 namespace hosts with torch and gloo: the mesh forms over the hosts' veths (the launcher picks
GLOO_SOCKET_IFNAME), an all-reduce sums every rank, and a short ZeRO-3 run (dsrun.initialize) trains with sharded
parameters."""

import json
import subprocess
import sys
from pathlib import Path

TRAIN = str(Path(__file__).with_name("train_worker.py"))


def test_all_reduce_and_sharded_training_across_hosts(idle_cluster, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dsrun", "-H", str(idle_cluster.hostfile(2)), "--no_local_rank", TRAIN],
        capture_output=True, text=True, timeout=180, env={**idle_cluster.env(), "NO_COLOR": "1"}, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    reports = {}
    for line in result.stdout.splitlines():
        label, _, payload = line.partition("] ")
        if payload.startswith("{"):
            reports[label.lstrip("[")] = json.loads(payload)
    assert sorted(reports) == ["h1 rank 0", "h1 rank 1", "h2 rank 2", "h2 rank 3"]
    losses = {tuple(r["losses"]) for r in reports.values()}
    assert len(losses) == 1  # every rank saw the same (all-reduced) losses
    (curve,) = losses
    assert curve[-1] < curve[0]
    for report in reports.values():
        assert report["world"] == 4 and report["sum"] == 1 + 2 + 3 + 4 and report["stage"] == 3
        assert report["local_params"] < report["full_params"]  # parameters are sharded, not replicated
