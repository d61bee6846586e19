"""The launcher's end of remote output: labelled lines to console and per-rank logs, agent events to the runner."""

import io

from dsrun.launcher.backends.relay import Relay, pump


def test_lines_go_to_rank_logs_events_to_the_runner(tmp_path, capsysbinary, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    events = []
    relay = Relay(console=True, log_dir=tmp_path, on_event=lambda source, event: events.append((source, event)))
    stream = io.BytesIO(b"[w1 rank 3] loss 0.5\n[w0 rank 0] no newline at the end")
    pump(stream, relay, "w1", 1)
    pump(io.BytesIO(b'@dsrun-event {"event": "done", "code": 0}\ndsrun[w1]: a note\n[w1 rank 3] warn\n'),
         relay, "w1", 2)
    relay.close()
    out, err = capsysbinary.readouterr()
    assert out == b"[w1 rank 3] loss 0.5\n[w0 rank 0] no newline at the end\n"
    assert err == b"dsrun[w1]: a note\n[w1 rank 3] warn\n"
    assert events == [("w1", {"event": "done", "code": 0})]
    assert (tmp_path / "rank3.log").read_bytes() == b"loss 0.5\nwarn\n"
    assert (tmp_path / "rank0.log").read_bytes() == b"no newline at the end\n"


def test_quiet_with_logs_keeps_the_console_clear(tmp_path, capsysbinary):
    relay = Relay(console=False, log_dir=tmp_path, on_event=lambda *_: None)
    relay.line("w0", b"[w0 rank 1] only in the log\n", 1)
    relay.close()
    assert capsysbinary.readouterr().out == b""
    assert (tmp_path / "rank1.log").read_text() == "only in the log\n"
