"""Long flags shortened to an unambiguous prefix (`--num_gpu 2`, `--launcher_arg ...`), which DeepSpeed's launcher
takes because argparse does; click (under typer) does not. Expanded before click parses, up to the script."""

from __future__ import annotations

from dataclasses import dataclass

from dsrun.errors import UsageError


@dataclass(frozen=True)
class Flag:
    key: str  # which option this name belongs to (its names share a key)
    takes_value: bool


def expand_prefixes(args: list[str], flags: dict[str, Flag]) -> list[str]:
    """`args` with each launcher flag written as a prefix of exactly one option spelled out; stops at the script
    (the first argument that is not a flag or a flag's value), since what follows belongs to the script."""
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--" or not arg.startswith("-"):
            return out + args[index:]  # the script and everything after it
        name, equals, value = arg.partition("=")
        if name.startswith("--") and name not in flags:
            name = _complete(name, flags)
        out.append(name + equals + value)
        flag = flags.get(name)
        if flag is not None and flag.takes_value and not equals and index + 1 < len(args):
            out.append(args[index + 1])  # the value, even one starting with "-"
            index += 1
        index += 1
    return out


def _complete(prefix: str, flags: dict[str, Flag]) -> str:
    matches = sorted(name for name in flags if name.startswith(prefix))
    if not matches:
        return prefix  # unknown: click names it
    if len({flags[name].key for name in matches}) > 1:
        raise UsageError(f"{prefix} is ambiguous: it could be {', '.join(matches)}; write the flag in full")
    return matches[0]
