"""How to reach a hostfile name over SSH: read ~/.ssh/config the way `ssh` does (aliases, HostName, User, Port,
IdentityFile, UserKnownHostsFile). Reading the file contacts nobody, so the dry run can show the result.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path

from dsrun.errors import UsageError

GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"


@dataclass(frozen=True)
class SshTarget:
    alias: str  # the name in the hostfile
    hostname: str  # what to connect to (HostName, or the alias itself)
    user: str
    port: int
    identity_files: list[str] = field(default_factory=list)
    known_hosts_files: list[str] = field(default_factory=list)  # first one receives newly trusted keys
    identities_only: bool = False
    proxy_command: str | None = None

    def known_hosts_key(self) -> str:
        """The name known_hosts files use for this host: `name`, or `[name]:port` off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def default_config_path() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "config"


def _load(config_path: Path):
    import paramiko

    if not config_path.is_file():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(config_path))
    except (paramiko.ssh_exception.ConfigParseError, OSError, ValueError) as err:
        raise UsageError(f"cannot read SSH config {config_path}: {err}") from None


def _port(value: str, alias: str, source: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise UsageError(f"{source}: port {value!r} for {alias} is not a port number (1-65535)")
    return port


def resolve_target(alias: str, ssh_port: int | None = None, config_path: Path | None = None) -> SshTarget:
    """Apply the SSH config to one hostfile name. `--ssh_port` overrides the config, as `ssh -p` does."""
    path = config_path or default_config_path()
    entry = _load(path).lookup(alias)
    if "proxyjump" in entry:
        raise UsageError(f"{path}: ProxyJump for {alias} is not supported by dsrun; write it as "
                         f"'ProxyCommand ssh -W %h:%p {entry['proxyjump']}'")
    if ssh_port is not None:
        port = _port(str(ssh_port), alias, "--ssh_port")
    else:
        port = _port(entry.get("port", "22"), alias, str(path))
    known = entry.get("userknownhostsfile", "~/.ssh/known_hosts").split()
    known = [os.path.expanduser(p) for p in known if p.lower() != "none"]
    proxy = entry.get("proxycommand")
    return SshTarget(
        alias=alias,
        hostname=entry.get("hostname", alias),
        user=entry.get("user") or getpass.getuser(),
        port=port,
        identity_files=[os.path.expanduser(p) for p in entry.get("identityfile", [])],
        known_hosts_files=known,
        identities_only=entry.get("identitiesonly", "no").lower() == "yes",
        proxy_command=proxy if proxy and proxy.lower() != "none" else None,
    )


def resolve_targets(aliases: list[str], ssh_port: int | None = None) -> list[SshTarget]:
    config_path = default_config_path()
    return [resolve_target(alias, ssh_port, config_path) for alias in aliases]
