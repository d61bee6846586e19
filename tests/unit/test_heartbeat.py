"""The worker's progress slot, in one process: what the engine stores is what the supervisor reads, and a
descriptor that is not the supervisor's memory file is never written."""

import os

import pytest

from dsrun.launcher.node.progress import JOINED, PROGRESS_ENV, RENDEZVOUS, SLOT, ProgressBoard, decode
from dsrun.runtime import heartbeat


@pytest.fixture
def board(monkeypatch):
    monkeypatch.setattr(heartbeat, "_slot", None)
    made = ProgressBoard([0, 1])
    yield made
    made.close()


def test_steps_stored_by_the_worker_are_read_by_the_supervisor(board, monkeypatch):
    assert board.read() == {0: None, 1: None}  # nothing reported yet
    monkeypatch.setenv(PROGRESS_ENV, str(os.dup(board.fds[1])))  # the worker's own copy, which start() closes
    heartbeat.start()
    assert board.read() == {0: None, 1: RENDEZVOUS}
    heartbeat.joined()
    assert board.read() == {0: None, 1: JOINED}
    heartbeat.report(17)
    heartbeat.joined()  # a second engine's initialize: the step stays
    assert board.read() == {0: None, 1: 17}


def test_a_torn_or_empty_slot_is_no_news():
    assert decode(bytes(SLOT.size)) is None
    assert decode(SLOT.pack(17, ~16)) is None
    assert decode(SLOT.pack(17, ~17)) == 17


def test_a_descriptor_that_is_not_the_supervisors_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(heartbeat, "_slot", None)
    other = tmp_path / "data.bin"
    other.write_bytes(bytes(SLOT.size))
    fd = os.open(other, os.O_RDWR)
    try:
        monkeypatch.setenv(PROGRESS_ENV, str(fd))  # the number a script reused after closing dsrun's descriptor
        heartbeat.start()
        heartbeat.report(5)
        assert heartbeat._slot is None and other.read_bytes() == bytes(SLOT.size)
    finally:
        os.close(fd)


def test_without_the_variable_reporting_does_nothing(monkeypatch):
    monkeypatch.setattr(heartbeat, "_slot", None)
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    heartbeat.start()
    heartbeat.report(3)
    assert heartbeat._slot is None
