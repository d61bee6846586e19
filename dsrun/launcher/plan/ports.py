"""Rendezvous ports: a free one on this machine, so two jobs on a box never fight over a fixed 29500."""

from __future__ import annotations

import socket

from dsrun.errors import UsageError

DEFAULT_PORT = 29500


def free_port(addr: str = "127.0.0.1") -> int:
    """A port nobody listens on right now. Rank 0 binds it moments later (the same race torchrun accepts)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((addr, 0))
        except OSError:
            sock.bind(("", 0))  # addr is not ours (e.g. a remote master); any local free port will do
        return int(sock.getsockname()[1])


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"--master_port must be between 1 and 65535, got {port}")
    return port
