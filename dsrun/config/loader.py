"""Load a run config from a JSON or YAML file, the way DeepSpeed reads JSON.

DeepSpeed parses its JSON with hjson, so real configs carry `//` and `#` comments and trailing commas; we use the
same parser to accept exactly what users already have. Duplicate keys are an error, as in DeepSpeed, because the
silent "last one wins" of plain json hides typos.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from dsrun.errors import UsageError
from dsrun.user_files import read_user_file

YAML_SUFFIXES = (".yaml", ".yml")

# Script arguments that name the run's config, as DeepSpeed scripts spell them.
CONFIG_ARG_NAMES = ("--config", "--deepspeed_config", "--deepspeed-config")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _parse_json(text: str) -> Any:
    import hjson

    return hjson.loads(text, object_pairs_hook=_reject_duplicates)


def _parse_yaml(text: str) -> Any:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[str, Any]:
        loader.flatten_mapping(node)
        return _reject_duplicates(
            [(loader.construct_object(k, deep=True), loader.construct_object(v, deep=True)) for k, v in node.value]
        )

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a config file into a dict; any problem is a UsageError naming the file."""
    file = Path(path)
    text = read_user_file(file, "config file")
    parse = _parse_yaml if file.suffix.lower() in YAML_SUFFIXES else _parse_json
    try:
        data = parse(text)
    except Exception as err:  # noqa: BLE001 - hjson and yaml raise many types; all mean "bad file"
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"config file {file} is not valid {_kind(file)}: {detail}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {file} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def _kind(file: Path) -> str:
    return "YAML" if file.suffix.lower() in YAML_SUFFIXES else "JSON"


def find_config_in_args(args: Sequence[str]) -> str | None:
    """The path a script's own `--config X` / `--deepspeed_config=X` argument names, if any (the last one wins)."""
    found = None
    for i, arg in enumerate(args):
        for name in CONFIG_ARG_NAMES:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(name + "="):
                found = arg[len(name) + 1 :]
    return found
