"""`dsrun plot` and `dsrun consolidate`: tools run on one machine after (or beside) a training run."""

from __future__ import annotations

from pathlib import Path

import typer

_SETTINGS = {"help_option_names": ["-h", "--help"]}

plot_app = typer.Typer(add_completion=False, rich_markup_mode="rich", context_settings=_SETTINGS)
consolidate_app = typer.Typer(add_completion=False, rich_markup_mode="rich", context_settings=_SETTINGS)


@plot_app.command(help="Draw RUN_DIR/training_metrics.csv (written by a run with csv_monitor, tensorboard or wandb"
                  " enabled) as training_curves.png: loss, learning rate and samples/s against the optimizer step.")
def plot(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="The run directory: <output_path>/<job_name>.",
                                   show_default=False),
    output: Path | None = typer.Option(None, "-o", "--output", help="Where to write the PNG (default: "
                                       "RUN_DIR/training_curves.png).", show_default=False),
) -> None:
    from dsrun.tools.plot import plot_run

    print(plot_run(run_dir, output))


@consolidate_app.command(help="Write a dsrun checkpoint's fp32 weights as one file, on one CPU process, whatever "
                         "ZeRO stage and world size saved it. OUT.pt holds them under \"module\" "
                         "(torch.load(OUT)[\"module\"] loads into the bare model); OUT.safetensors needs safetensors.")
def consolidate(
    checkpoint_dir: Path = typer.Argument(..., metavar="CHECKPOINT_DIR", show_default=False,
                                          help="A save directory (its 'latest' tag is used) or one tag's directory."),
    out: Path = typer.Argument(..., metavar="OUT", show_default=False, help="Output file: .pt or .safetensors."),
) -> None:
    from dsrun.runtime.checkpoint.consolidate import consolidate as export  # imports torch: only when used

    source = export(checkpoint_dir, out)
    print(f"wrote {out} from {source}")


SUBCOMMANDS: dict[str, typer.Typer] = {"plot": plot_app, "consolidate": consolidate_app}
