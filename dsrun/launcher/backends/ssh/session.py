"""The launcher's side of one host: an SSH connection running that host's node agent.

`open()` is the pre-flight (connect, start the agent, wait for its hello); `start()` ships the job and follows the
agent's output; `stop()` asks the agent to end the job with a signal; `hang_up()` drops the connection, which a
running agent also takes as "stop".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import BinaryIO

import paramiko

from dsrun.launcher.backends.relay import Relay, pump
from dsrun.launcher.backends.ssh import connection as ssh
from dsrun.launcher.backends.ssh.config import SshTarget
from dsrun.launcher.node.protocol import PROTOCOL, parse_event, signal_line
from dsrun.launcher.plan.remote import EXIT_NO_CWD, EXIT_NO_PYTHON
from dsrun.launcher.plan.world import NodePlan

HELLO_SECONDS = 30.0  # an agent's python start on a busy node; more than this and something is wrong
LOST = -1  # exit status of an agent whose connection ended without one


@dataclass(frozen=True)
class Hello:
    version: str
    free_port: int
    peer_address: str  # the address this launcher reached the host at


class HostSession:
    def __init__(self, node: NodePlan, target: SshTarget, command: str, *, python: str, cwd: str,
                 accept_new: bool, timeout: float):
        self.node = node
        self.target = target
        self.command = command
        self.python = python
        self.cwd = cwd
        self.accept_new = accept_new
        self.timeout = timeout
        self.client: paramiko.SSHClient | None = None
        self.channel: paramiko.Channel | None = None
        self.hello: Hello | None = None
        self.done: dict | None = None  # the agent's "done" event, once it arrives
        self.exit_status: int | None = None
        self._stderr: BinaryIO | None = None

    @property
    def host(self) -> str:
        return self.node.host

    # -- pre-flight ----------------------------------------------------------------------------------------------
    def open(self) -> Hello:
        """Connect and start the agent; a HostError says in one line why this host cannot take part."""
        self.client = ssh.connect(self.target, accept_new=self.accept_new, timeout=self.timeout)
        transport = self.client.get_transport()
        if transport is None:
            raise ssh.HostError(self.host, "the SSH connection closed right after it opened")
        peer = transport.getpeername()[0]
        try:
            channel = self.channel = transport.open_session(timeout=self.timeout)
            channel.settimeout(max(self.timeout, HELLO_SECONDS))
            channel.exec_command(self.command)
            stderr = self._stderr = channel.makefile_stderr("rb")
            said: list[str] = []
            for raw in iter(stderr.readline, b""):
                text = raw.decode("utf-8", "replace").rstrip("\n")
                event = parse_event(text)
                if event is not None and event["event"] == "hello":
                    self.hello = self._check_hello(event, peer)
                    channel.settimeout(None)
                    return self.hello
                said.append(text)
        except TimeoutError:
            raise ssh.HostError(self.host, f"the node agent did not answer within {HELLO_SECONDS:g} s") from None
        except OSError as err:
            raise ssh.HostError(self.host, f"the SSH session broke during start-up: {err}") from None
        raise ssh.HostError(self.host, self._why_no_agent(channel.recv_exit_status(), said))

    def _check_hello(self, event: dict, peer: str) -> Hello:
        if event.get("protocol") != PROTOCOL:
            raise ssh.HostError(self.host, f"dsrun {event.get('version')} there speaks agent protocol "
                                           f"{event.get('protocol')}, this one {PROTOCOL}: install one dsrun version "
                                           "everywhere")
        return Hello(str(event.get("version")), int(event["free_port"]), peer)

    def _why_no_agent(self, status: int, said: list[str]) -> str:
        if status == EXIT_NO_CWD:
            return f"directory {self.cwd} does not exist there: create it, or pass --remote-cwd"
        if status == EXIT_NO_PYTHON:
            return f"python {self.python} is not there: install it at the same path, or pass --remote-python"
        text = " ".join(said)
        if "No module named" in text and "dsrun" in text:
            return f"dsrun is not installed for {self.python} there: pip install dsrun on that host"
        last = said[-1] if said else "no output"
        return f"the node agent did not start (exit status {status}): {last}"

    # -- the job -------------------------------------------------------------------------------------------------
    def start(self, job_line: bytes, relay: Relay, on_end) -> None:
        """Ship the job, then copy the agent's output into the relay; `on_end(self)` runs once it has exited."""
        channel = self._open_channel()
        channel.sendall(job_line)
        out = threading.Thread(target=pump, args=(channel.makefile("rb"), relay, self, 1), daemon=True)
        err = threading.Thread(target=pump, args=(self._stderr, relay, self, 2), daemon=True)
        out.start()
        err.start()

        def wait() -> None:
            out.join()
            err.join()
            status = channel.recv_exit_status()  # -1 when the connection closed without one
            self.exit_status = LOST if status < 0 else status
            on_end(self)

        threading.Thread(target=wait, daemon=True, name=f"wait-{self.host}").start()

    def _open_channel(self) -> paramiko.Channel:
        if self.channel is None:
            raise RuntimeError(f"{self.host}: the session was not opened (open() comes first)")
        return self.channel

    def stop(self, signum: int) -> None:
        self.send(signal_line(signum))

    def send(self, line: bytes) -> None:
        """One protocol line to the agent (a stop, a collect request)."""
        try:
            self._open_channel().sendall(line)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the connection is already gone, and with it the agent's stdin: it is stopping by itself

    def hang_up(self) -> None:
        if self.client is not None:
            self.client.close()
