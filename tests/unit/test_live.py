"""The live view's parts without a job: rows built from fake slot and psutil values, the table they make, psutil's
reading of a real process, and the decision to draw only on a terminal."""

import io
import os
import signal
import subprocess
import sys

import pytest
from rich.console import Console

from dsrun.launcher.live.rows import RATE_WINDOW, RankSeen, RowBuilder, Usage, state_of
from dsrun.launcher.live.usage import NO_USAGE, UsageProbe
from dsrun.launcher.live.view import live_wanted, render_table
from dsrun.launcher.node.progress import JOINED, NO_SAMPLES, RENDEZVOUS, Progress

USAGE = Usage(cpu_percent=97.0, rss=300 * 2**20)


def test_the_state_follows_the_process_and_its_slot():
    assert state_of(None, None) == "starting"
    assert state_of(None, Progress(RENDEZVOUS, NO_SAMPLES, 0.0, 0)) == "at rendezvous"
    assert state_of(None, Progress(JOINED, NO_SAMPLES, 0.0, 0)) == "running"
    assert state_of(0, Progress(5, 40, 1.0, 5)) == "exited 0"
    assert state_of(3, None) == "exited 3"
    assert state_of(-signal.SIGKILL, None) == "killed SIGKILL"


def test_a_row_shows_step_loss_rate_and_idle_time_from_the_supervisors_clock():
    rows = RowBuilder({0: "node-a", 1: "node-b"}, started=100.0)
    first = rows.row(0, RankSeen(4242, None, None), NO_USAGE, now=102.0)
    assert (first.state, first.step, first.loss, first.samples_per_s, first.since_progress) == \
        ("starting", None, None, None, 2.0)
    rows.row(0, RankSeen(4242, None, Progress(10, 320, 2.5, 10)), USAGE, now=103.0)
    row = rows.row(0, RankSeen(4242, None, Progress(14, 448, 2.25, 14)), USAGE, now=105.0)
    assert (row.host, row.pid, row.state) == ("node-a", 4242, "running")
    assert (row.step, row.loss, row.loss_step) == (14, 2.25, 14)
    assert row.samples_per_s == pytest.approx(64.0)  # 128 samples in 2 s
    assert (row.cpu_percent, row.rss, row.since_progress) == (97.0, 300 * 2**20, 0.0)
    stalled = rows.row(0, RankSeen(4242, None, Progress(14, 448, 2.25, 14)), USAGE, now=105.0 + RATE_WINDOW + 1)
    assert stalled.since_progress == RATE_WINDOW + 1
    assert stalled.samples_per_s == 0.0  # nothing new over the whole window


def test_a_loss_from_an_earlier_step_says_so_and_an_ended_rank_shows_no_usage():
    rows = RowBuilder({0: "node-a"}, started=0.0)
    row = rows.row(0, RankSeen(7, None, Progress(9, NO_SAMPLES, 1.5, 8)), USAGE, now=1.0)
    assert (row.step, row.loss, row.loss_step, row.samples_per_s) == (9, 1.5, 8, None)
    ended = rows.row(0, RankSeen(7, -signal.SIGTERM, Progress(9, NO_SAMPLES, 1.5, 8)), USAGE, now=2.0)
    assert (ended.state, ended.cpu_percent, ended.rss, ended.since_progress) == ("killed SIGTERM", None, None, None)


def test_a_rank_stuck_after_a_nan_loss_shows_its_idle_time():
    rows = RowBuilder({0: "h"}, started=0.0)
    rows.row(0, RankSeen(7, None, Progress(3, 96, float("nan"), 3)), USAGE, now=1.0)
    # Each read of the slot decodes a new NaN object (tuple equality would pass one object as equal to itself).
    again = Progress(3, 96, float("nan"), 3)
    assert rows.row(0, RankSeen(7, None, again), USAGE, now=30.0).since_progress == 29.0


def test_a_sample_count_that_goes_back_starts_the_rate_again():
    rows = RowBuilder({0: "h"}, started=0.0)
    rows.row(0, RankSeen(7, None, Progress(50, 1600, 1.0, 50)), USAGE, now=1.0)
    row = rows.row(0, RankSeen(7, None, Progress(1, 32, 1.0, 1)), USAGE, now=2.0)  # a second engine
    assert row.samples_per_s is None


def test_the_table_fits_80_columns_with_every_column():
    rows = RowBuilder({0: "a-very-long-node-name-0017.cluster.example.org"}, started=0.0)
    rows.row(0, RankSeen(123456, None, Progress(1, 32, 1.0, 1)), USAGE, now=1.0)
    row = rows.row(0, RankSeen(123456, None, Progress(3, 96, 0.8125, 2)), USAGE, now=3.0)
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False).print(render_table([row], 75.0))
    text = out.getvalue()
    assert "dsrun · 1 rank(s) · 1m15s" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    for cell in ("a-very-l…", "123456", "running", "97", "300 MiB", "0.8125 @2", "32.0", "0 s"):
        assert cell in text, cell
    header = next(line for line in text.splitlines() if "rank" in line and "host" in line)
    assert header.split() == ["rank", "host", "pid", "state", "CPU%", "RSS", "step", "loss", "samples/s", "idle"]


def test_psutil_reads_a_live_process_and_a_gone_one_reads_as_nothing():
    probe = UsageProbe()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        first = probe.read(child.pid)
        assert first.cpu_percent is None and first.rss > 0  # psutil needs two readings for a CPU share
        assert probe.read(child.pid).cpu_percent is not None
    finally:
        child.kill()
        child.wait()
    assert probe.read(child.pid) == NO_USAGE


class FakeStream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("requested", "tty", "term", "wanted"), [
    (True, True, "xterm-256color", True),
    (True, False, "xterm-256color", False),  # redirected to a file or a pipe: output as without --live
    (True, True, "dumb", False),
    (False, True, "xterm-256color", False),
])
def test_the_view_is_drawn_only_when_asked_for_on_a_terminal(requested, tty, term, wanted, monkeypatch):
    monkeypatch.setenv("TERM", term)
    assert live_wanted(requested, FakeStream(tty)) is wanted


def test_the_check_uses_the_real_stdout_of_a_pipe():
    read, write = os.pipe()
    try:
        with os.fdopen(write, "w", closefd=False) as stream:
            assert live_wanted(True, stream) is False
    finally:
        os.close(read)
        os.close(write)


@pytest.fixture
def launches(monkeypatch):
    """The backends replaced by recorders: which one ran, and whether it was asked for the live view."""
    from dsrun.launcher.backends import local
    from dsrun.launcher.backends.ssh import run as ssh

    calls = []
    monkeypatch.setattr(local, "run_local", lambda plan, **kw: calls.append(("local", kw.get("live"))) or 0)
    monkeypatch.setattr(ssh, "run_ssh", lambda plan, **kw: calls.append(("ssh", kw.get("live"))) or 0)
    return calls


def launch(argv: list[str], tmp_path) -> int:
    from dsrun.cli import main

    script = tmp_path / "train.py"
    script.write_text("")
    with pytest.raises(SystemExit) as end:
        main([*argv, str(script)])
    return end.value.code


@pytest.mark.parametrize("terminal", [True, False])
def test_a_local_run_gets_the_view_only_on_a_terminal(terminal, launches, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    monkeypatch.setenv("TERM", "xterm")
    assert launch(["--live", "--device", "cpu"], tmp_path) == 0
    assert launches == [("local", terminal)]
    assert "--live" not in capsys.readouterr().err


def test_a_remote_run_gets_the_view_too(launches, monkeypatch, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("w0 slots=1\nw1 slots=1\n")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm")
    assert launch(["--live", "-H", str(hostfile), "--device", "cpu"], tmp_path) == 0
    assert launches == [("ssh", True)]
