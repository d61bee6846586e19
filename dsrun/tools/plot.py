"""`dsrun plot RUN_DIR`: training_curves.png from a run's training_metrics.csv (loss, learning rate, throughput).

matplotlib is optional (the `monitor` extra) and imported only here, when a plot is asked for; no torch.
"""

from __future__ import annotations

import math
from pathlib import Path

from dsrun.errors import UsageError
from dsrun.tools.metrics import METRICS_CSV, read_metrics

CURVES_PNG = "training_curves.png"
_MARKERS_UP_TO = 60  # steps; with fewer points a line alone hides them, so each one gets a dot
_SMOOTH_FROM = 5  # steps in the smoothing window (a twentieth of the run); shorter windows barely smooth
_LOG_SCALE_RANGE = 30  # loss max/min from which a log axis shows the late steps (a linear one flattens them)


def _matplotlib():
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot, no GUI backend, safe at interpreter exit
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UsageError("plotting needs matplotlib: pip install matplotlib"
                         " (or pip install 'dsrun[monitor]')") from None
    return Figure, MaxNLocator


def _moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over finite values, so a NaN step (fp16 overflow) does not blank the smoothed line."""
    out, recent = [], []
    for value in values:
        if math.isfinite(value):
            recent.append(value)
        if len(recent) > window:
            recent.pop(0)
        out.append(sum(recent) / len(recent) if recent else math.nan)
    return out


def _median(values: list[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return math.nan
    middle = len(finite) // 2
    return finite[middle] if len(finite) % 2 else (finite[middle - 1] + finite[middle]) / 2


def plot_run(run_dir: Path | str, output: Path | str | None = None) -> Path:
    """Draw RUN_DIR/training_metrics.csv into `output` (default RUN_DIR/training_curves.png); return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a directory: give a run directory (<output_path>/<job_name> of the"
                         " config's csv_monitor or tensorboard section)")
    csv_path = run_dir / METRICS_CSV
    if not csv_path.is_file():
        raise UsageError(f"{run_dir} has no {METRICS_CSV}: it is written by a run whose config enables csv_monitor,"
                         " tensorboard or wandb")
    metrics = read_metrics(csv_path)
    steps = metrics["step"]
    if not steps:
        raise UsageError(f"{csv_path} has no steps yet: nothing to plot")
    figure_class, locator = _matplotlib()
    target = Path(output) if output is not None else run_dir / CURVES_PNG
    figure = _draw(figure_class, locator, run_dir, metrics)
    try:
        figure.savefig(target, dpi=110)
    except OSError as err:
        raise UsageError(f"cannot write {target}: {err.strerror}") from None
    return target


def _draw(Figure, MaxNLocator, run_dir: Path, metrics: dict[str, list[float]]):
    steps = metrics["step"]
    marker = "o" if len(steps) <= _MARKERS_UP_TO else None
    figure = Figure(figsize=(9, 9.5), layout="constrained")
    loss_ax, lr_ax, speed_ax = figure.subplots(3, 1, sharex=True)
    samples = metrics["samples"][-1]
    count = f"{len(steps)} step" + ("s" if len(steps) > 1 else "")
    figure.suptitle(f"{run_dir.resolve().name}: {count}, {samples:,} samples", fontsize=13)

    loss = metrics["loss"]
    loss_ax.plot(steps, loss, marker=marker, markersize=3, linewidth=1, color="tab:blue", alpha=0.6,
                 label="loss per step")
    window = len(steps) // 20
    if window >= _SMOOTH_FROM:
        loss_ax.plot(steps, _moving_average(loss, window), color="tab:blue", linewidth=2,
                     label=f"mean of the last {window} steps")
    skipped = [s for s, applied in zip(steps, metrics["applied"], strict=True) if applied == 0]
    if skipped:
        # Along the bottom edge: a skipped step's loss is often inf/NaN and would have no place on the y-axis.
        loss_ax.plot(skipped, [0.04] * len(skipped), "x", color="tab:red", markersize=7,
                     transform=loss_ax.get_xaxis_transform(), label=f"update skipped (overflow): {len(skipped)}")
    title = "Training loss (mean over the step's micro-batches and ranks)"
    finite = [v for v in loss if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) >= _LOG_SCALE_RANGE:
        loss_ax.set_yscale("log")
        title += ", log scale"
    loss_ax.set_title(title)
    loss_ax.set_ylabel("loss")
    loss_ax.legend(loc="upper right")

    lr_ax.plot(steps, metrics["lr"], marker=marker, markersize=3, color="tab:green")
    lr_ax.set_title("Learning rate (first parameter group)")
    lr_ax.set_ylabel("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))

    speed = metrics["samples_per_sec"]
    speed_ax.plot(steps, speed, marker=marker, markersize=3, color="tab:orange", label="per step")
    median = _median(speed)
    if math.isfinite(median):
        speed_ax.axhline(median, color="tab:gray", linestyle="--", linewidth=1, label=f"median {median:,.1f}")
    speed_ax.set_title("Throughput (whole job, all ranks)")
    speed_ax.set_ylabel("samples / s")
    speed_ax.set_ylim(bottom=0)  # from zero, so step-to-step jitter is not drawn as if it were a collapse
    speed_ax.set_xlabel("optimizer step")
    speed_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # shared by all three panels
    if steps[-1] - steps[0] < 2:  # too short a span for whole-number ticks: widen it
        speed_ax.set_xlim(steps[0] - 1, steps[-1] + 1)
    speed_ax.legend(loc="lower right")
    for ax in (loss_ax, lr_ax, speed_ax):
        ax.grid(True, alpha=0.3)
    return figure

