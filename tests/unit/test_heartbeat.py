"""The worker's progress slot, in one process: what the engine stores is what the supervisor reads (step, samples,
loss), a torn or empty slot is no news, and a descriptor that is not the supervisor's memory file is never
written."""

import os

import pytest

from dsrun.launcher.node.progress import (
    JOINED,
    NO_SAMPLES,
    PROGRESS_ENV,
    RENDEZVOUS,
    SLOT_SIZE,
    Progress,
    ProgressBoard,
    decode,
    encode,
)
from dsrun.runtime import heartbeat


@pytest.fixture
def board(monkeypatch):
    monkeypatch.setattr(heartbeat, "_slot", None)
    monkeypatch.setattr(heartbeat, "_loss", (0.0, 0))
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
    assert board.read_all()[1] == Progress(17, NO_SAMPLES, 0.0, 0)  # no loss reported yet


def test_the_loss_and_samples_reach_the_supervisor_and_a_step_without_a_loss_keeps_the_last(board, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, str(os.dup(board.fds[0])))
    heartbeat.start()
    heartbeat.report(3, 96, 2.5)
    assert board.read_all()[0] == Progress(3, 96, 2.5, 3)
    heartbeat.report(4, 128)  # on an accelerator the engine publishes no loss
    assert board.read_all()[0] == Progress(4, 128, 2.5, 3)


def test_a_torn_or_empty_slot_is_no_news():
    old, new = encode(Progress(16, 512, 1.25, 16)), encode(Progress(17, 544, 1.0, 17))
    assert decode(bytes(SLOT_SIZE)) is None
    assert decode(new[:SLOT_SIZE - 1]) is None
    for cut in range(1, SLOT_SIZE):  # the worker rewrote the first `cut` bytes while we read
        torn = new[:cut] + old[cut:]
        assert decode(torn) is None or torn == new, cut
    assert decode(new) == Progress(17, 544, 1.0, 17)


def test_a_descriptor_that_is_not_the_supervisors_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(heartbeat, "_slot", None)
    other = tmp_path / "data.bin"
    other.write_bytes(bytes(SLOT_SIZE))
    fd = os.open(other, os.O_RDWR)
    try:
        monkeypatch.setenv(PROGRESS_ENV, str(fd))  # the number a script reused after closing dsrun's descriptor
        heartbeat.start()
        heartbeat.report(5)
        assert heartbeat._slot is None and other.read_bytes() == bytes(SLOT_SIZE)
    finally:
        os.close(fd)


def test_without_the_variable_reporting_does_nothing(monkeypatch):
    monkeypatch.setattr(heartbeat, "_slot", None)
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    heartbeat.start()
    heartbeat.report(3)
    assert heartbeat._slot is None
