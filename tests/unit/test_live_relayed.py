"""--live over SSH and Slurm, the launcher's side: the relay hands remote lines to the live view instead of the
console (logs unchanged), and `live` events become rows while every other event still reaches the job."""

import io

from dsrun.launcher.backends.relay import Relay, pump
from dsrun.launcher.live.relayed import RelayLive, route_live_events
from dsrun.launcher.live.rows import RankSeen, Usage
from dsrun.launcher.node.progress import Progress


class FakeScreen:
    def __init__(self):
        self.lines: list[tuple] = []
        self.updates: list[dict] = []

    def line(self, rank, label, text):
        self.lines.append((rank, label, text))

    def text(self, text):
        self.lines.append((None, None, text))

    def update(self, ranks, now):
        self.updates.append(ranks)


def test_remote_lines_go_to_the_screen_and_still_to_the_logs(tmp_path, capsysbinary):
    relay = Relay(console=True, log_dir=tmp_path, on_event=lambda *_: None)
    relay.screen = screen = FakeScreen()
    pump(io.BytesIO(b"[w1 rank 3] loss 0.5\n"), relay, "w1", 1)
    pump(io.BytesIO(b"dsrun[w1]: a note\n[w0 rank 0] warn\n"), relay, "w1", 2)
    relay.close()
    assert capsysbinary.readouterr() == (b"", b"")  # nothing around the view's back
    assert screen.lines == [(3, "w1 rank 3", b"loss 0.5\n"), (None, None, b"dsrun[w1]: a note\n"),
                            (0, "w0 rank 0", b"warn\n")]
    assert (tmp_path / "rank3.log").read_bytes() == b"loss 0.5\n"


def test_quiet_with_logs_shows_no_line_on_the_screen_either(tmp_path):
    relay = Relay(console=False, log_dir=tmp_path, on_event=lambda *_: None)
    relay.screen = screen = FakeScreen()
    relay.line("w0", b"[w0 rank 1] only in the log\n", 1)
    relay.close()
    assert screen.lines == []


def test_an_agents_rows_reach_the_view_and_other_events_the_job():
    sent, job_events = [], []
    agent = RelayLive(2, lambda kind, **fields: sent.append({"event": kind, **fields}))
    agent.show({4: RankSeen(999_999_999, None, Progress(7, 224, 0.5, 7)),  # no such process: no usage
                5: RankSeen(1234, 0, None)}, now=0.0)
    view = FakeScreen()
    handle = route_live_events(lambda source, event: job_events.append(event), view)
    handle("w1", sent[0])
    handle("w1", {"event": "done", "node_rank": 2, "code": 0})
    assert view.updates == [{4: (RankSeen(999_999_999, None, Progress(7, 224, 0.5, 7)), Usage(None, None)),
                             5: (RankSeen(1234, 0, None), Usage(None, None))}]
    assert job_events == [{"event": "done", "node_rank": 2, "code": 0}]
