"""Real hosts on one machine: network namespaces on a private bridge, each running its own sshd.

Each cluster takes a free index X (an flock under /run/dsrun-cluster, released by the kernel if we die) and uses
only its own names (`dsrX...`) and addresses (10.231.X.0/24): the bridge holds 10.231.X.1 for the launcher, host
i holds 10.231.X.(10+i). Leftovers of a crashed run with the same index are removed before it is reused.
A client HOME with ~/.ssh/config (aliases h1..hN), a key and known_hosts lets dsrun reach them like real hosts.
Used by the cluster tests and by bench/multinode_launch.py; needs root, iproute2 and openssh-server.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

STATE = Path("/run/dsrun-cluster")
SSHD = "/usr/sbin/sshd"
SUBNET = "10.231"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def netns_pids(namespace: str) -> list[int]:
    out = sh("ip", "netns", "pids", namespace, check=False).stdout
    return [int(p) for p in out.split()]


def _remove_namespaces(prefix: str) -> None:
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix):
            for pid in netns_pids(name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", name, check=False)


def missing_tools() -> list[str]:
    return [tool for tool in ("ip", SSHD, "ssh-keygen") if not shutil.which(tool) and not os.path.exists(tool)]


class Cluster:
    def __init__(self, count: int, workdir: Path):
        self.count = count
        self.workdir = workdir
        self.index: int | None = None
        self._lock = None
        self.home = workdir / "home"

    # -- names ---------------------------------------------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"dsr{self.index}br"

    def namespace(self, i: int) -> str:
        return f"dsr{self.index}h{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{self.index}.{10 + i}"

    @property
    def hosts(self) -> list[str]:
        return [f"h{i}" for i in range(1, self.count + 1)]

    def hostfile(self, slots: int, count: int | None = None) -> Path:
        path = self.workdir / f"hostfile-{count or self.count}x{slots}"
        path.write_text("".join(f"{h} slots={slots}\n" for h in self.hosts[: count or self.count]))
        return path

    def env(self) -> dict[str, str]:
        """Environment for a dsrun that should reach this cluster's hosts by their aliases."""
        return {**os.environ, "HOME": str(self.home)}

    # -- life cycle ----------------------------------------------------------------------------------------------
    def _claim_index(self) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        for index in range(1, 250):
            lock = open(STATE / f"{index}.lock", "w")  # noqa: SIM115 - held for the cluster's lifetime
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self.index, self._lock = index, lock
            _remove_namespaces(f"dsr{index}h")  # a crashed run's leftovers: its lock died with it
            sh("ip", "link", "del", self.bridge, check=False)
            return
        raise RuntimeError("no free cluster index under /run/dsrun-cluster")

    def _keys(self) -> None:
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.workdir / "client_key"))
        (self.workdir / "authorized_keys").write_text((self.workdir / "client_key.pub").read_text())
        config, known = [], []
        for i, host in enumerate(self.hosts, start=1):
            key = self.workdir / f"{host}_host_key"
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
            known.append(f"{self.address(i)} {' '.join(Path(f'{key}.pub').read_text().split()[:2])}\n")
            config.append(f"Host {host}\n  HostName {self.address(i)}\n  User root\n"
                          f"  IdentityFile {self.workdir / 'client_key'}\n")
        (ssh_dir / "config").write_text("".join(config))
        (ssh_dir / "known_hosts").write_text("".join(known))

    def _sshd_config(self, i: int) -> Path:
        host = self.hosts[i - 1]
        path = self.workdir / f"{host}_sshd_config"
        path.write_text(
            f"ListenAddress {self.address(i)}\nPort 22\nHostKey {self.workdir / f'{host}_host_key'}\n"
            f"PidFile {self.workdir / f'{host}.pid'}\nAuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPermitRootLogin prohibit-password\nMaxStartups 64\nMaxSessions 64\nLogLevel ERROR\n"
        )
        return path

    def _host(self, i: int) -> None:
        ns, veth, peer = self.namespace(i), f"dsr{self.index}v{i}", f"dsr{self.index}p{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", peer)
        sh("ip", "-n", ns, "link", "set", peer, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, SSHD, "-f", str(self._sshd_config(i)),
           "-E", str(self.workdir / f"{self.hosts[i - 1]}_sshd.log"))

    def _wait_for_sshd(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for i in range(1, self.count + 1):
            while True:
                try:
                    with socket.create_connection((self.address(i), 22), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"sshd on {self.hosts[i - 1]} did not come up") from None
                    time.sleep(0.05)

    def start(self) -> Cluster:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self._claim_index()
        try:
            self._keys()
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            sh("ip", "addr", "add", f"{SUBNET}.{self.index}.1/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
            for i in range(1, self.count + 1):
                self._host(i)
            self._wait_for_sshd()
        except BaseException:
            self.stop()
            raise
        return self

    def sshd_pid(self, i: int) -> int:
        return int((self.workdir / f"{self.hosts[i - 1]}.pid").read_text())

    def foreign_pids(self) -> dict[str, list[int]]:
        """Processes in each namespace other than its sshd daemon: after a job, there must be none."""
        found = {}
        for i in range(1, self.count + 1):
            pids = [p for p in netns_pids(self.namespace(i)) if p != self.sshd_pid(i)]
            if pids:
                found[self.hosts[i - 1]] = pids
        return found

    def wait_until_idle(self, timeout: float = 15.0) -> dict[str, list[int]]:
        """Wait for every namespace to hold only its sshd (session processes exit just after the job)."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.foreign_pids()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def stop(self) -> None:
        if self.index is None:
            return
        _remove_namespaces(f"dsr{self.index}h")
        sh("ip", "link", "del", self.bridge, check=False)
        self._lock.close()
        self.index = None
