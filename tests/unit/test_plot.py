"""`dsrun plot RUN_DIR`: training_curves.png from training_metrics.csv, in-process, and its errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dsrun.cli.launch import main
from dsrun.errors import UsageError
from dsrun.tools.metrics import COLUMNS, METRICS_CSV, format_row
from dsrun.tools.plot import plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir, steps=30, *, header=COLUMNS, torn_last_row=False):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for n in range(1, steps + 1):
        lines.append(",".join(format_row({"step": n, "samples": 64 * n, "loss": 3.0 / n, "lr": 1e-3, "grad_norm": 1.0,
                                          "applied": n != 5, "skipped_steps": int(n >= 5), "step_time_s": 0.02,
                                          "samples_per_sec": 3200.0})))
    if torn_last_row:
        lines.append("31,1984,0.0")  # a crash in the middle of a row
    (run_dir / METRICS_CSV).write_text("\n".join(lines) + "\n")
    return run_dir


def png_size(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_writes_the_png_next_to_the_csv(tmp_path):
    run_dir = write_run(tmp_path / "job", torn_last_row=True)
    out = plot_run(run_dir)
    assert out == run_dir / "training_curves.png"
    width, height = png_size(out)
    assert width > 800 and height > 800  # three stacked panels at a readable size


def test_plot_of_a_single_step(tmp_path):
    assert png_size(plot_run(write_run(tmp_path / "job", steps=1)))[0] > 0


def test_cli_plot_in_process(tmp_path, capsys):
    run_dir = write_run(tmp_path / "job")
    target = tmp_path / "elsewhere.png"
    with pytest.raises(SystemExit) as exit_:
        main(["plot", str(run_dir), "-o", str(target)])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == str(target)
    png_size(target)
    assert not (run_dir / "training_curves.png").exists()


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: root / "missing", "is not a directory"),
    (lambda root: root, "has no training_metrics.csv"),
    (lambda root: write_run(root / "job", steps=0), "has no steps yet"),
    (lambda root: write_run(root / "job", header=("a", "b")), "is not a dsrun training_metrics.csv"),
])
def test_cli_plot_errors_are_one_line_and_exit_2(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit) as exit_:
        main(["plot", str(make(tmp_path))])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dsrun: error: ") and message in err and err.count("\n") == 1


def test_missing_matplotlib_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UsageError, match="pip install matplotlib"):
        plot_run(write_run(tmp_path / "job"))


def test_launch_help_still_comes_first_and_names_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "SCRIPT" in out and "--num_gpus" in out and "dsrun plot RUN_DIR" in out
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    assert "RUN_DIR" in capsys.readouterr().out


def test_plot_does_not_import_torch(tmp_path):
    run_dir = write_run(tmp_path / "job")
    code = ("import sys; from dsrun.cli.launch import main\n"
            "try:\n    main(['plot', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines()[-1] == "False", result.stderr
    assert (run_dir / "training_curves.png").is_file()
