"""Benchmark "multinode_launch": time from `dsrun -H hostfile` to every worker running, for 1, 2, 4 and 8 hosts.

The hosts are network namespaces with their own sshd (tests/cluster/hosts.py), one worker per host. Each worker's
first statement prints the wall clock; all processes share this machine's clock, so "all running" is the latest of
those stamps minus the moment dsrun was started. Host counts are interleaved within each repetition so drift of
the machine hits them alike. Goal: 8 hosts within 1.5x the time of 1 host.

Every host here shares the same 2 cores, and each SSH session pays for the host's own login shell (on this
machine root's ~/.bashrc runs `pyenv init`, ~0.14 s of CPU per session). So the benchmark also measures the floor
any SSH launcher pays on these hosts: connecting to all of them in parallel and running `true` on each.

Standalone, as root: `.venv/bin/python bench/multinode_launch.py [--reps N]`; writes bench/results/*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stats import summary  # noqa: E402
from tests.cluster.hosts import Cluster  # noqa: E402

NAME = "multinode_launch"
HOST_COUNTS = (1, 2, 4, 8)
GOAL_RATIO = 1.5
WORKER = "import time\nprint(f'started {time.time():.6f}', flush=True)\n"


def launch_once(cluster: Cluster, hosts: int, workdir: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "dsrun", "-q", "-H", str(cluster.hostfile(1, hosts)), str(workdir / "w.py")]
    env = {**cluster.env(), "NO_COLOR": "1"}
    started = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir, timeout=120)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"dsrun on {hosts} host(s) exited {proc.returncode}:\n{proc.stderr}")
    stamps = [float(line.split("started ")[1]) for line in proc.stdout.splitlines() if "started " in line]
    if len(stamps) != hosts:
        raise RuntimeError(f"{len(stamps)} of {hosts} workers reported:\n{proc.stdout}\n{proc.stderr}")
    return {"all_running": max(stamps) - started, "first_running": min(stamps) - started, "total": ended - started}


def ssh_floor(cluster: Cluster, hosts: int) -> float:
    """Seconds to connect to `hosts` hosts in parallel and run `true` on each, with dsrun's own SSH code."""
    from concurrent.futures import ThreadPoolExecutor

    from dsrun.launcher.backends.ssh.config import resolve_target
    from dsrun.launcher.backends.ssh.connection import connect

    def one(host: str) -> None:
        client = connect(resolve_target(host))
        channel = client.get_transport().open_session()
        channel.exec_command("true")
        channel.recv_exit_status()
        client.close()

    started = time.time()
    with ThreadPoolExecutor(max_workers=hosts) as pool:
        list(pool.map(one, cluster.hosts[:hosts]))
    return time.time() - started


def run(reps: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        (workdir / "w.py").write_text(WORKER)
        (workdir / "cluster").mkdir()
        cluster = Cluster(max(HOST_COUNTS), workdir / "cluster").start()
        os.environ["HOME"] = str(cluster.home)  # ssh_floor reads the cluster's ~/.ssh/config in this process
        try:
            launch_once(cluster, 1, workdir)  # warm-up: .pyc files and page cache, not a launcher's steady state
            samples: dict[int, list[dict[str, float]]] = {n: [] for n in HOST_COUNTS}
            for rep in range(reps):
                order = HOST_COUNTS if rep % 2 == 0 else tuple(reversed(HOST_COUNTS))
                for hosts in order:
                    samples[hosts].append(launch_once(cluster, hosts, workdir))
                    samples[hosts][-1]["ssh_floor"] = ssh_floor(cluster, hosts)
        finally:
            cluster.stop()
    results = {
        str(n): {key: summary([s[key] for s in samples[n]]) for key in ("all_running", "first_running", "total",
                                                                      "ssh_floor")}
        for n in HOST_COUNTS
    }
    one = results["1"]["all_running"]["median"]
    eight = results[str(max(HOST_COUNTS))]["all_running"]["median"]
    return {"name": NAME, "reps": reps, "cores": os.cpu_count(), "hosts": results,
            "ratio_8_to_1": eight / one, "goal_ratio": GOAL_RATIO, "goal_met": eight / one <= GOAL_RATIO}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    result = run(args.reps)
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for hosts, figures in result["hosts"].items():
        print(f"{hosts} host(s): all workers running after {figures['all_running']['median']:.3f} s "
              f"(min {figures['all_running']['min']:.3f}, max {figures['all_running']['max']:.3f}); "
              f"whole job {figures['total']['median']:.3f} s; SSH floor (connect + `true`) "
              f"{figures['ssh_floor']['median']:.3f} s")
    print(f"8 hosts / 1 host = {result['ratio_8_to_1']:.2f} (goal <= {GOAL_RATIO}); written to {path}")


if __name__ == "__main__":
    main()
