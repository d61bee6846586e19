"""~/.ssh/config resolution for hostfile names: aliases, HostName, User, Port, IdentityFile, UserKnownHostsFile."""

import getpass

import pytest

from dsrun.errors import UsageError
from dsrun.launcher.backends.ssh.config import resolve_target

CONFIG = """
Host gpu*
  User trainer
  IdentityFile ~/.ssh/cluster_key
Host gpu1
  HostName 10.0.0.21
  Port 2222
  UserKnownHostsFile ~/.ssh/cluster_known /etc/extra_known
Host jumped
  ProxyJump bastion
Host broken
  Port 99999
"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "config"
    path.write_text(CONFIG)
    return path


def test_alias_takes_hostname_user_port_keys_and_known_hosts(config, tmp_path):
    target = resolve_target("gpu1", config_path=config)
    assert (target.alias, target.hostname, target.user, target.port) == ("gpu1", "10.0.0.21", "trainer", 2222)
    assert target.identity_files == [str(tmp_path / ".ssh" / "cluster_key")]
    assert target.known_hosts_files == [str(tmp_path / ".ssh" / "cluster_known"), "/etc/extra_known"]
    assert target.known_hosts_key() == "[10.0.0.21]:2222"


def test_ssh_port_flag_overrides_the_config(config):
    assert resolve_target("gpu1", ssh_port=2200, config_path=config).port == 2200


def test_unlisted_name_is_its_own_hostname_with_defaults(config, tmp_path):
    target = resolve_target("node-7", config_path=config)
    assert (target.hostname, target.port, target.user) == ("node-7", 22, getpass.getuser())
    assert target.known_hosts_files == [str(tmp_path / ".ssh" / "known_hosts")]
    assert target.known_hosts_key() == "node-7"


def test_missing_config_file_means_defaults(tmp_path):
    target = resolve_target("w0", config_path=tmp_path / "absent")
    assert (target.hostname, target.port) == ("w0", 22)


@pytest.mark.parametrize(("alias", "message"), [
    ("jumped", "ProxyJump for jumped is not supported"),
    ("broken", "port '99999' for broken is not a port number"),
])
def test_config_problems_are_usage_errors(config, alias, message):
    with pytest.raises(UsageError, match=message):
        resolve_target(alias, config_path=config)


def test_bad_ssh_port_flag_is_a_usage_error(config):
    with pytest.raises(UsageError, match="--ssh_port"):
        resolve_target("gpu1", ssh_port=0, config_path=config)
