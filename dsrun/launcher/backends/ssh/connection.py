"""One SSH connection to one host with paramiko: known_hosts checked, keys and ssh-agent used, never a password.

Every failure becomes a HostError whose message names the host, what went wrong and what to do about it; the
launcher gathers one per host before any worker starts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

import paramiko

from dsrun.launcher.backends.ssh.config import GLOBAL_KNOWN_HOSTS, SshTarget

# paramiko logs connection drops with tracebacks from its own threads; the launcher reports them itself.
logging.getLogger("paramiko").setLevel(logging.CRITICAL + 1)

_known_hosts_lock = threading.Lock()  # hosts are contacted in parallel and may all append to one file


class HostError(Exception):
    """A host that cannot take part: unreachable, untrusted, refused us, or lacks python/dsrun."""

    def __init__(self, host: str, message: str):
        super().__init__(f"{host}: {message}")
        self.host = host


def _append_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    with _known_hosts_lock:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as known:
            known.write(f"{name} {key.get_name()} {key.get_base64()}\n")


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """An unknown host is refused with the command that trusts it, unless the user opted in to trust new hosts."""

    def __init__(self, target: SshTarget, accept_new: bool):
        self.target = target
        self.accept_new = accept_new

    def missing_host_key(self, client, hostname, key) -> None:
        target = self.target
        files = target.known_hosts_files or [os.path.expanduser("~/.ssh/known_hosts")]
        if not self.accept_new:
            port = f"-p {target.port} " if target.port != 22 else ""
            raise HostError(
                target.alias,
                f"{target.known_hosts_key()} is not a known host ({key.get_name()} key {key.fingerprint}); "
                f"check the key and trust it with "
                f"'ssh-keyscan {port}{target.hostname} >> {files[0]}' or run with --ssh-accept-new-hosts",
            )
        _append_known_host(Path(files[0]), target.known_hosts_key(), key)


def _load_known_hosts(client: paramiko.SSHClient, target: SshTarget) -> None:
    # All files are loaded read-only: a newly trusted key is appended by the policy, never by rewriting a file.
    for path in [GLOBAL_KNOWN_HOSTS, *target.known_hosts_files]:
        if os.path.isfile(path):
            try:
                client.load_system_host_keys(path)
            except (OSError, paramiko.SSHException) as err:
                raise HostError(target.alias, f"cannot read known hosts file {path}: {err}") from None


def _describe_socket_error(err: OSError, target: SshTarget, timeout: float) -> str:
    where = f"{target.hostname} port {target.port}"
    if isinstance(err, socket.timeout | TimeoutError):
        reason = f"no answer within {timeout:g} s"
    elif isinstance(err, socket.gaierror):
        reason = f"the name does not resolve ({err.strerror})"
    elif isinstance(err, paramiko.ssh_exception.NoValidConnectionsError) and err.errors:
        reason = "; ".join(sorted({e.strerror or str(e) for e in err.errors.values()}))
    else:
        reason = err.strerror or str(err)
    return f"cannot reach {where}: {reason}; check the name (or its HostName in ~/.ssh/config), --ssh_port, " \
           "and that sshd runs there"


def connect(target: SshTarget, *, accept_new: bool = False, timeout: float = 10.0) -> paramiko.SSHClient:
    """An authenticated connection to `target`, or a HostError saying why not."""
    client = paramiko.SSHClient()
    _load_known_hosts(client, target)
    client.set_missing_host_key_policy(_KnownHostsPolicy(target, accept_new))
    keys = [path for path in target.identity_files if os.path.isfile(path)]
    try:
        client.connect(
            target.hostname,
            port=target.port,
            username=target.user,
            key_filename=keys or None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=True,
            look_for_keys=not target.identities_only,
            sock=paramiko.ProxyCommand(target.proxy_command) if target.proxy_command else None,
        )
    except HostError:
        client.close()
        raise
    except paramiko.BadHostKeyException as err:
        client.close()
        raise HostError(
            target.alias,
            f"the host key of {target.known_hosts_key()} differs from the one in known_hosts ({err.key.get_name()});"
            f" if the host was reinstalled, remove the old key with \"ssh-keygen -R '{target.known_hosts_key()}'\"",
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        tried = ", ".join(["ssh-agent", *keys] + ([] if target.identities_only else ["~/.ssh/id_*"]))
        raise HostError(
            target.alias,
            f"{target.user}@{target.hostname} refused every key (tried {tried}); add your public key to "
            f"~{target.user}/.ssh/authorized_keys there or name the key with IdentityFile in ~/.ssh/config",
        ) from None
    except OSError as err:
        client.close()
        raise HostError(target.alias, _describe_socket_error(err, target, timeout)) from None
    except paramiko.SSHException as err:
        client.close()
        raise HostError(target.alias, f"SSH to {target.hostname} port {target.port} failed: {err}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)  # idle jobs still notice a peer that vanished
    return client
