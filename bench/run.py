"""`make bench`: run the launcher benchmarks, save every repetition as JSON, refresh the table in bench/README.md.

    .venv/bin/python bench/run.py [--reps N | --quick] [--only NAME ...] [--out DIR] [--readme FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# Run as a script, Python puts bench/ on sys.path, not the repo root; the harness imports `bench.*` as a package.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import (  # noqa: E402
    checkpoint_io,
    launch,
    memory,
    moe_bench,
    pipeline_bench,
    plan_scale,
    plots,
    report,
    train_step,
)
from bench.timing import BenchError  # noqa: E402

# Each takes (reps, repo, quick). The training benchmarks shorten themselves under --quick; the launcher ones
# already run in seconds.
BENCHMARKS = {
    launch.NAME: lambda reps, repo, quick: launch.run(reps, repo),
    train_step.NAME: train_step.run,
    train_step.BF16_SUM_NAME: lambda reps, repo, quick: train_step.run(reps, repo, quick, "bf16"),
    memory.NAME: memory.run,
    plan_scale.NAME: lambda reps, repo, quick: plan_scale.run(reps, repo),
    checkpoint_io.NAME: checkpoint_io.run,
    pipeline_bench.NAME: pipeline_bench.run,
    moe_bench.NAME: moe_bench.run,
}
DEFAULT_REPS = 7
QUICK_REPS = 2


def _version(package: str) -> str | None:
    # From the installed metadata: importing torch here would cost seconds and put torch in the harness's memory.
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_state() -> dict | None:
    """Which code was measured: the commit, and whether the tree had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        dirty = bool(git("status", "--porcelain"))
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout, or no commit yet
    return {"commit": commit, "dirty": dirty}


def machine_facts() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "dsrun": _version("dsrun"),
        "git": _git_state(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    reps = parser.add_mutually_exclusive_group()
    reps.add_argument("--reps", type=int, default=DEFAULT_REPS,
                      help=f"repetitions per benchmark (default {DEFAULT_REPS})")
    reps.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_REPS} repetitions")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for the JSON results")
    parser.add_argument("--readme", type=Path, default=REPO / "bench" / "README.md", help="file whose table to refresh")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = QUICK_REPS
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.only or list(BENCHMARKS)
    started = dt.datetime.now(dt.UTC)
    run = {
        "schema": 1,
        "date": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "reps": args.reps,
        "quick": args.quick,
        "machine": machine_facts(),
        # Load before and after: on a shared 2-core machine a busy neighbour explains a wide min–max spread.
        "loadavg_start": os.getloadavg(),
        "benchmarks": {},
    }
    try:
        for name in names:
            print(f"{name}: {args.reps} reps", file=sys.stderr)
            run["benchmarks"][name] = BENCHMARKS[name](args.reps, REPO, args.quick)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 1
    run["loadavg_end"] = os.getloadavg()
    run["seconds"] = (dt.datetime.now(dt.UTC) - started).total_seconds()

    path = report.write_run(run, args.out, started.strftime("%Y%m%dT%H%M%SZ"))
    plots.write_plots(run, path)
    markdown = report.results_markdown(report.latest_per_benchmark(args.out), args.readme.parent)
    report.update_readme(args.readme, markdown)
    print(markdown)
    print(f"\nresults: {path}\ntable:   {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
