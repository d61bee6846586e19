"""Check a raw config against the key catalogue: unknown keys, wrong types and ranges become UsageErrors.

The result is a "clean" copy: every value in its canonical type, and keys whose value is null or "auto" left out,
because both mean "use the default / derive it". "auto" is accepted only for keys something fills in: the batch keys
(dsrun's batch math), and the keys Hugging Face's Trainer and Accelerate write as "auto" and fill in before
initialize(); DeepSpeed's pydantic sections drop it to the default, so an unfilled one takes DeepSpeed's default.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from dsrun.config.checks import show
from dsrun.config.declare import Catalogue, iter_paths
from dsrun.errors import UsageError


def auto_paths(section: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the config's "auto" values (what Hugging Face's Trainer fills in before initialize())."""
    if not isinstance(section, Mapping):
        return []
    found = []
    for key, value in section.items():
        path = f"{prefix}{key}"
        if isinstance(value, str) and value == "auto":
            found.append(path)
        found.extend(auto_paths(value, f"{path}."))
    return found


def validate(raw: Mapping[str, Any], top: Catalogue) -> dict[str, Any]:
    """The clean copy of `raw`, checked against the catalogue `top` (the whole config's)."""
    return _validate(raw, top, top, "")


def _validate(raw: Mapping[str, Any], section: Catalogue, top: Catalogue, prefix: str) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            where = prefix.rstrip(".") or "the config"
            raise UsageError(f"{where} has a key that is not a string, {show(key)}: write config keys as strings")
        path = f"{prefix}{key}"
        entry = section.get(key)
        if entry is None:
            raise UsageError(unknown_key_message(prefix, key, section, top))
        if value is None:
            continue
        if isinstance(value, str) and value == "auto":
            if not entry.auto:
                raise UsageError(f'{path} cannot be "auto": nothing fills it in (Hugging Face\'s Trainer and'
                                 " Accelerate fill in only their own keys): give a value, or remove the key for"
                                 " DeepSpeed's default")
            continue
        if entry.children is not None:
            if not isinstance(value, Mapping):
                raise UsageError(f"{path} must be a mapping of keys to values, got {show(value)}")
            clean[key] = _validate(value, entry.children, top, f"{path}.")
        else:
            assert entry.check is not None  # an entry is a check or a section
            clean[key] = entry.check(path, value)
    return clean


def _known_paths(top: Catalogue) -> frozenset[str]:
    return frozenset(path for path, _entry in iter_paths(top))


def _paths_by_name(top: Catalogue) -> dict[str, tuple[str, ...]]:
    """Every catalogue path, indexed by its last component, to spot a key written in the wrong section."""
    index: dict[str, list[str]] = {}
    for path, _entry in iter_paths(top):
        index.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    return {name: tuple(paths) for name, paths in index.items()}


def suggestion(prefix: str, key: str, section: Catalogue, top: Catalogue) -> str | None:
    """The key the user most likely meant: a known key placed in the wrong section, else a close spelling."""
    elsewhere = _paths_by_name(top).get(key, ())
    if 1 <= len(elsewhere) <= 2:
        return " or ".join(elsewhere)
    by_lower = {name.lower(): name for name in section}
    if key.lower() in by_lower:
        return prefix + by_lower[key.lower()]
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1)
    return prefix + by_lower[close[0]] if close else None


def _nested(dotted: str) -> str:
    """A dotted path written the way the config nests it: `a.b` -> `"a": {"b": ...}`."""
    *outer, last = dotted.split(".")
    text = f'"{last}": ...'
    for part in reversed(outer):
        text = f'"{part}": {{{text}}}'
    return text


def unknown_key_message(prefix: str, key: str, section: Catalogue, top: Catalogue) -> str:
    if not key.isprintable():  # a stray newline or tab in a key must not break the one-line error
        return f"{prefix}{show(key)} is not a DeepSpeed config key: check its spelling and section, or remove it"
    path = prefix + key
    if "." in key and path in _known_paths(top):
        return f"{path} is not a DeepSpeed config key: nest it instead, as {_nested(key)}"
    guess = suggestion(prefix, key, section, top)
    if guess:
        return f"{path} is not a DeepSpeed config key: did you mean {guess}?"
    return f"{path} is not a DeepSpeed config key: check its spelling and section, or remove it"
