"""`dsrun.add_config_arguments(parser)`: the argparse flags DeepSpeed scripts expect, and no others.

DeepSpeed adds --deepspeed, --deepspeed_config and their deprecated --deepscale twins. dsrun also offers --config
(when the script has no flag of that name). --local_rank is not added up front: scripts add their own after this
call and would die with argparse's "conflicting option string". Yet the launcher passes --local_rank=N, so it is
declared at parse time when the script has not declared it by then.
"""

from __future__ import annotations

import argparse
import os

_LOCAL_RANK = ("--local_rank", "--local-rank")


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("DeepSpeed", "DeepSpeed configurations")

    def add(*names: str, **kwargs) -> None:
        free = [n for n in names if n not in parser._option_string_actions]  # argparse has no public lookup
        if free:
            group.add_argument(*free, **kwargs)

    add("--deepspeed", action="store_true", help="accepted for DeepSpeed scripts; dsrun is always on")
    add("--deepspeed_config", "--config", dest="deepspeed_config", default=None,
        help="the run's config file (JSON or YAML)")
    add("--deepscale", action="store_true", help=argparse.SUPPRESS)  # deprecated spelling of --deepspeed
    add("--deepscale_config", default=None, help=argparse.SUPPRESS)  # deprecated spelling of --deepspeed_config
    _accept_local_rank(parser)
    return parser


def _accept_local_rank(parser: argparse.ArgumentParser) -> None:
    parse_known_args = parser.parse_known_args

    def parse_declaring_local_rank(args=None, namespace=None):
        free = [n for n in _LOCAL_RANK if n not in parser._option_string_actions]
        if len(free) == len(_LOCAL_RANK):  # the script declared neither spelling
            parser.add_argument(*free, dest="local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                                help=argparse.SUPPRESS)
        return parse_known_args(args, namespace)

    parser.parse_known_args = parse_declaring_local_rank  # type: ignore[method-assign]  # parse_args calls it
