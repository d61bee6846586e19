"""`dsrun.add_config_arguments(parser)`: the argparse flags DeepSpeed scripts expect, and no others.

DeepSpeed adds --deepspeed, --deepspeed_config and their deprecated --deepscale twins. dsrun also offers --config
(when the script has no flag of that name). --local_rank is not added up front: scripts add their own after this
call and would die with argparse's "conflicting option string". Yet the launcher passes --local_rank=N, so it is
declared at parse time when the script has not declared it by then (also in a child parser made with
parents=[...]).
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
            action = group.add_argument(*free, **kwargs)
            action.dsrun_config_argument = True  # type: ignore[attr-defined]  # copied along with the action

    add("--deepspeed", action="store_true", help="accepted for DeepSpeed scripts; dsrun is always on")
    add("--deepspeed_config", "--config", dest="deepspeed_config", default=None,
        help="the run's config file (JSON or YAML)")
    add("--deepscale", action="store_true", help=argparse.SUPPRESS)  # deprecated spelling of --deepspeed
    add("--deepscale_config", default=None, help=argparse.SUPPRESS)  # deprecated spelling of --deepspeed_config
    _accept_local_rank()
    return parser


def _declare_local_rank(parser: argparse.ArgumentParser) -> None:
    """Before parsing: a parser holding dsrun's arguments (itself, or a child built with parents=[...]) that declares
    neither --local_rank spelling gets it, hidden."""
    if not any(getattr(action, "dsrun_config_argument", False) for action in parser._actions):
        return
    if not any(name in parser._option_string_actions for name in _LOCAL_RANK):
        parser.add_argument(*_LOCAL_RANK, dest="local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                            help=argparse.SUPPRESS)


def _accept_local_rank() -> None:
    """Wrap the parse entry points of ArgumentParser itself (once), not of one parser: a child parser made with
    parents=[...] copies the parent's arguments but not its methods. Parsers without dsrun's arguments are left
    exactly as they are."""
    cls = argparse.ArgumentParser
    for method in ("parse_known_args", "parse_known_intermixed_args"):
        original = getattr(cls, method, None)
        if original is None or getattr(original, "dsrun_wrapped", False):
            continue

        def wrapped(self, *args, _original=original, **kwargs):
            _declare_local_rank(self)
            return _original(self, *args, **kwargs)

        wrapped.dsrun_wrapped = True  # type: ignore[attr-defined]
        setattr(cls, method, wrapped)
