"""Fixtures the e2e tests share."""

import pytest

from tests.pids import kill_survivors


@pytest.fixture
def pid_dir(tmp_path):
    """A directory the workers write their pids to (PID_DIR); whatever a test asserted, nothing it started may
    survive it."""
    directory = tmp_path / "pids"
    directory.mkdir()
    yield directory
    stray = kill_survivors(directory)
    assert not stray, f"processes left behind: {stray}"
