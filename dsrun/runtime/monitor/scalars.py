"""The named values of one step that TensorBoard and wandb receive, under DeepSpeed's metric names."""

from __future__ import annotations

# DeepSpeed's engine logs `Train/Samples/<name>` with the global sample count as the x-axis; its pipeline engine
# names the loss `train_loss`, and its wall_clock_breakdown timers are `elapsed_time_ms_<timer>`.
SAMPLES_PREFIX = "Train/Samples/"
# The same values again against the optimizer step, which is easier to line up with the console's progress lines.
STEPS_PREFIX = "Train/Steps/"

_FIELDS = (
    ("train_loss", "loss"),
    ("lr", "lr"),
    ("grad_norm", "grad_norm"),
    ("loss_scale", "loss_scale"),
    ("samples_per_sec", "samples_per_sec"),
    ("step_time_s", "step_time_s"),
    ("elapsed_time_ms_forward", "forward_ms"),
    ("elapsed_time_ms_backward", "backward_ms"),
    ("elapsed_time_ms_step", "optimizer_ms"),
)


def step_scalars(stats) -> dict[str, float]:
    """Metric name -> value for `stats` (a StepStats); values the run does not have are left out."""
    values = {}
    for name, field in _FIELDS:
        value = getattr(stats, field, None)
        if value is not None:
            values[name] = float(value)
    return values
