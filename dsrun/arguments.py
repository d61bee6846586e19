"""`dsrun.add_config_arguments(parser)`: the argparse flags DeepSpeed scripts expect."""

from __future__ import annotations

import argparse
import os


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --deepspeed, --deepspeed_config/--config and --local_rank, skipping any the script already defines."""
    group = parser.add_argument_group("dsrun", "run configuration (DeepSpeed-compatible)")

    def add(*names: str, **kwargs) -> None:
        free = [n for n in names if n not in parser._option_string_actions]  # argparse has no public lookup
        if free:
            group.add_argument(*free, **kwargs)

    add("--deepspeed", action="store_true", help="accepted for DeepSpeed scripts; dsrun is always on")
    add("--deepspeed_config", "--config", dest="deepspeed_config", default=None,
        help="the run's config file (JSON or YAML)")
    add("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
        help="set by the launcher")
    return parser
