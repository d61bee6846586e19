"""Worker output routing: rank prefixes, colour only on a terminal, one write per line, stderr tails, log files."""

import os

from dsrun.launcher.node import output


def pump(router, rank, data: bytes, fd: int = 1) -> None:
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    router.follow(rank, open(read, "rb"), fd)
    router.close()


def test_prefix_without_colour_when_not_a_terminal(capfdbinary):
    router = output.OutputRouter()
    pump(router, 3, b"hello\npartial")
    out = capfdbinary.readouterr().out
    assert out == b"[rank 3] hello\n[rank 3] partial\n"


def test_colour_on_a_terminal(capfdbinary, monkeypatch):
    monkeypatch.setattr(output, "_wants_colour", lambda stream: True)
    router = output.OutputRouter()
    pump(router, 1, b"x\n")
    out = capfdbinary.readouterr().out
    assert out == output._COLOURS[1] + b"[rank 1]" + output._RESET + b" x\n"


def test_no_color_env_disables_colour(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")

    class Terminal:
        def isatty(self):
            return True

    assert output._wants_colour(Terminal()) is False


def test_stderr_tail_and_log_file(tmp_path, capfdbinary):
    router = output.OutputRouter(console=False, log_dir=tmp_path)
    router.open_log(0)
    lines = b"".join(f"line {i}\n".encode() for i in range(30))
    pump(router, 0, lines, fd=2)
    assert capfdbinary.readouterr().err == b""  # console copy off
    assert (tmp_path / "rank0.log").read_bytes() == lines
    assert list(router.tails[0]) == [f"line {i}" for i in range(30 - output.TAIL_LINES, 30)]
