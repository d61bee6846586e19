"""Fixtures for tests on real hosts made of network namespaces (see hosts.py). They need root and the Debian
packages `make system-deps` installs; without them the tests fail with the reason rather than skip."""

import os

import pytest

from tests.cluster.hosts import Cluster, missing_tools


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("cluster tests create network namespaces and need root")
    missing = missing_tools()
    if missing:
        pytest.fail(f"cluster tests need {', '.join(missing)}: run `make system-deps`")
    hosts = Cluster(2, tmp_path_factory.mktemp("cluster")).start()
    yield hosts
    hosts.stop()


@pytest.fixture
def idle_cluster(cluster):
    """The cluster, checked before and after the test: no process but sshd in any namespace."""
    assert cluster.wait_until_idle() == {}
    yield cluster
    left = cluster.wait_until_idle()
    assert left == {}, f"processes left in the namespaces: {left}"


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    from tests.cluster.slurm_cluster import SlurmCluster

    if os.geteuid() != 0:
        pytest.fail("Slurm tests start munged, slurmctld and slurmd and need root")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()
