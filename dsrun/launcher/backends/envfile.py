"""The environment that travels to remote workers: DeepSpeed's exported prefixes plus `.dsrun_env`/`.deepspeed_env`.

A remote worker starts from its host's login environment, not from the launcher's. DeepSpeed forwards variables
whose names start with a few prefixes and the `KEY=VALUE` lines of a `.deepspeed_env` file; users moving over keep
both. Unlike DeepSpeed, the file may hold comments, blank lines and `export KEY=VALUE`, and a bad line is an error
naming the file and line instead of a crash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dsrun.errors import UsageError

# DeepSpeed's EXPORT_ENVS plus its CUDA list (NCCL); GLOO is gloo's counterpart of NCCL on CPU clusters.
EXPORTED_PREFIXES = ("NCCL", "PYTHON", "MV2", "UCX", "MLFLOW", "GLOO")
ENV_FILE_NAMES = (".deepspeed_env", ".dsrun_env")  # later names win: dsrun's own file overrides the migrant's

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def exported_from(environ: dict[str, str]) -> dict[str, str]:
    """The launcher's variables a remote worker should see, by DeepSpeed's prefix rule."""
    return {k: v for k, v in environ.items() if k.startswith(EXPORTED_PREFIXES)}


def parse_env_file(text: str, source: str) -> dict[str, str]:
    """`KEY=VALUE` lines; `#` comment lines, blank lines and a leading `export ` are allowed.

    The value is everything after the first `=`, taken literally (no shell expansion happens anywhere on the way to
    the worker) with surrounding blanks dropped; one pair of matching surrounding quotes is removed, so a value
    that starts or ends with a blank can be written quoted.
    """
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not _NAME.fullmatch(key):
            raise UsageError(f"{source}:{number}: expected KEY=VALUE with a variable name as KEY, got {raw.strip()!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def env_file_paths(cwd: Path, home: Path) -> list[Path]:
    """Where env files are looked for, weakest first: the home folder, then the launch folder.

    DeepSpeed's DS_ENV_FILE (another name, or an absolute path, for .deepspeed_env) is honoured too.
    """
    names = list(ENV_FILE_NAMES)
    custom = os.environ.get("DS_ENV_FILE")
    if custom:
        names[0] = custom
    paths: list[Path] = []
    for folder in (home, cwd):
        for name in names:
            path = folder / name  # an absolute name replaces the folder
            if path not in paths:
                paths.append(path)
    return paths


def read_env_files(paths: list[Path]) -> tuple[dict[str, str], list[Path]]:
    """Merge the env files that exist (later ones win); returns the variables and the files used."""
    env: dict[str, str] = {}
    used: list[Path] = []
    for path in paths:
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read env file {path}: {err}") from None
        env.update(parse_env_file(text, str(path)))
        used.append(path)
    return env, used


def remote_env(environ: dict[str, str], cwd: Path, home: Path) -> tuple[dict[str, str], list[Path]]:
    """Everything the launcher adds to a remote host's own environment, and the env files it came from."""
    from_files, used = read_env_files(env_file_paths(cwd, home))
    return {**exported_from(environ), **from_files}, used
