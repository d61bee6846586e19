"""A real one-machine Slurm cluster for the tests: munged, slurmctld and slurmd with a private config.

Everything lives in a scratch folder: the munge key and socket, the slurm.conf (clients find it through
SLURM_CONF), state, spool, pid and log files, and free ports, so nothing in /etc is touched and two test runs on
one machine do not meet. Needs root and Debian's slurm-wlm and munge.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_munge(*args: str) -> None:
    subprocess.run(["runuser", "-u", "munge", "--", *args], check=True, capture_output=True, timeout=30)


class SlurmCluster:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.node = socket.gethostname()
        self.conf = workdir / "slurm.conf"
        self.munge_socket: Path | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _munge(self) -> None:
        # munged runs as the munge user, who may not enter the test's private tmp folder: its own folder in /tmp.
        munge_dir = Path(tempfile.mkdtemp(prefix="dsrun-munge-"))
        munge_dir.chmod(0o755)
        self.munge_socket = munge_dir / "munge.socket"
        user = pwd.getpwnam("munge")
        os.chown(munge_dir, user.pw_uid, user.pw_gid)
        _as_munge("mungekey", "--create", f"--keyfile={munge_dir / 'munge.key'}")
        _as_munge("munged", f"--socket={self.munge_socket}", f"--key-file={munge_dir / 'munge.key'}",
                  f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
                  f"--seed-file={munge_dir / 'munged.seed'}")

    def _write_conf(self) -> None:
        for folder in ("state", "spool"):
            (self.dir / folder).mkdir()
        self.conf.write_text(
            f"ClusterName=dsrtest\nSlurmctldHost={self.node}\n"
            f"SlurmctldPort={_free_port()}\nSlurmdPort={_free_port()}\n"
            f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\nCredType=cred/munge\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\nSlurmUser=root\nSlurmdUser=root\n"
            "MpiDefault=none\nReturnToService=2\nKillWait=5\n"
            f"StateSaveLocation={self.dir / 'state'}\nSlurmdSpoolDir={self.dir / 'spool'}\n"
            f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}\nSlurmdPidFile={self.dir / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={self.dir / 'slurmctld.log'}\nSlurmdLogFile={self.dir / 'slurmd.log'}\n"
            f"NodeName={self.node} CPUs={os.cpu_count()} State=UNKNOWN\n"
            f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP\n"
        )

    def _wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env(),
                                   timeout=10).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"the Slurm node did not become idle; logs in {self.dir}")

    def start(self) -> SlurmCluster:
        try:
            self._munge()
            self._write_conf()
            for daemon in ("slurmctld", "slurmd"):
                subprocess.run([daemon, "-f", str(self.conf)], check=True, capture_output=True, timeout=30,
                               env=self.env())
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        pid_files = [self.dir / "slurmd.pid", self.dir / "slurmctld.pid"]
        if self.munge_socket is not None:
            pid_files.append(self.munge_socket.parent / "munged.pid")
        for pid_file in pid_files:
            try:
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        if self.munge_socket is not None:
            shutil.rmtree(self.munge_socket.parent, ignore_errors=True)
