"""Choosing GLOO/NCCL_SOCKET_IFNAME: the interface that routes to MASTER_ADDR."""

from dsrun.launcher.node.netif import interface_holding, interface_towards, socket_ifname_env

INTERFACES = {"lo": ["127.0.0.1", "::1", "00:00:00:00:00:00"], "eth0": ["10.0.0.5", "fe80::1%eth0"],
              "docker0": ["172.17.0.1"]}


def test_interface_holding_an_address():
    assert interface_holding("10.0.0.5", INTERFACES) == "eth0"
    assert interface_holding("172.17.0.1", INTERFACES) == "docker0"
    assert interface_holding("fe80::1", INTERFACES) == "eth0"
    assert interface_holding("192.168.1.1", INTERFACES) is None


def test_route_to_loopback_is_lo():
    assert interface_towards("127.0.0.1") == "lo"


def test_user_choice_is_kept_and_only_missing_ones_are_set():
    assert socket_ifname_env("127.0.0.1", {"GLOO_SOCKET_IFNAME": "x", "NCCL_SOCKET_IFNAME": "y"})[0] == {}
    env, note = socket_ifname_env("127.0.0.1", {"NCCL_SOCKET_IFNAME": "ib0"})
    assert env == {"GLOO_SOCKET_IFNAME": "lo"} and "route to 127.0.0.1" in note


def test_unresolvable_master_sets_nothing():
    env, note = socket_ifname_env("no-such-host.invalid", {})
    assert env == {} and "no route" in note
