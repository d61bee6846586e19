"""Which network interface a node's workers should use: the one its kernel routes to MASTER_ADDR through.

gloo and NCCL bind to the address the node's own host name resolves to, which is often 127.0.x.1 or a docker
bridge: the full mesh then fails with "Connection refused". The route to MASTER_ADDR is the interface the other
ranks can reach, so each node agent sets GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME to it unless the user did.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil

SOCKET_IFNAME_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def source_address(destination: str) -> str | None:
    """The local address the kernel would send from to reach `destination` (a name or an IP), or None.

    Connecting a UDP socket only consults the routing table: no packet leaves the machine.
    """
    try:
        infos = socket.getaddrinfo(destination, 9, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            try:
                sock.connect(address)
            except OSError:
                continue
            return str(sock.getsockname()[0])
    return None


def interface_holding(address: str, interfaces: dict[str, list[str]]) -> str | None:
    """The interface that carries `address`, given {interface name: [addresses]}."""
    wanted = ipaddress.ip_address(address.split("%")[0])
    for name, addresses in interfaces.items():
        for candidate in addresses:
            try:
                if ipaddress.ip_address(candidate.split("%")[0]) == wanted:
                    return name
            except ValueError:
                continue  # MAC addresses and the like
    return None


def local_interfaces() -> dict[str, list[str]]:
    return {name: [a.address for a in addrs] for name, addrs in psutil.net_if_addrs().items()}


def interface_towards(destination: str) -> str | None:
    source = source_address(destination)
    return interface_holding(source, local_interfaces()) if source else None


def socket_ifname_env(master_addr: str, environ: dict[str, str]) -> tuple[dict[str, str], str]:
    """The *_SOCKET_IFNAME variables to add for this node, and a sentence saying what was chosen and why."""
    missing = [name for name in SOCKET_IFNAME_VARS if name not in environ]
    if not missing:
        return {}, "GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME kept as set"
    interface = interface_towards(master_addr)
    if interface is None:
        return {}, f"no route to MASTER_ADDR {master_addr} found; socket interfaces left to gloo/NCCL"
    return {name: interface for name in missing}, f"{'/'.join(missing)}={interface} (the route to {master_addr})"
