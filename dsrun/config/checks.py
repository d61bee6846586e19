"""Value checks for config keys: each takes (key path, value) and returns the value in its canonical type.

DeepSpeed validates most sections with pydantic in "lax" mode, so configs in the wild carry `"enabled": "true"`,
`"reduce_bucket_size": 5e8` (a float in JSON) or, from YAML, `reduce_bucket_size: 5e8` (a *string*: YAML 1.1 needs
a dot to read it as a number). The checks accept what pydantic accepts plus those YAML strings, and turn everything
into one type, so the rest of dsrun never sees a float where it expects an int. A value that cannot mean what the key
needs is a UsageError naming the key path and the expectation.
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Any, Callable, Mapping

from dsrun.errors import UsageError

Check = Callable[[str, Any], Any]

# The strings pydantic's lax mode reads as booleans (compared case-insensitively).
_TRUE_STRINGS = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE_STRINGS = frozenset({"0", "off", "f", "false", "n", "no"})


def show(value: Any) -> str:
    """A value as it would appear in the user's (JSON) file, cut short so an error stays one line."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(path: str, expectation: str, value: Any) -> UsageError:
    return UsageError(f"{path} must be {expectation}, got {show(value)}")


def boolean(path: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_STRINGS:
            return True
        if word in _FALSE_STRINGS:
            return False
    raise _fail(path, "true or false", value)


def _as_float(value: Any) -> float | None:
    """The number a value stands for, or None when it is not a finite number (bools are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value) if abs(value) < 2**1023 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    number = _as_float(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def _bound(limit: float) -> str:
    return f"{limit:g}" if isinstance(limit, float) else str(limit)


def _range_words(kind: str, minimum: float | None, maximum: float | None) -> str:
    article = "an" if kind == "integer" else "a"
    if minimum is None and maximum is None:
        return f"{article} {kind}"
    if maximum is None:
        assert minimum is not None  # both None returned above
        if minimum == 1 and kind == "integer":
            return "a positive integer"
        if minimum == 0:
            return f"a non-negative {kind}"
        return f"{article} {kind} of at least {_bound(minimum)}"
    if minimum is None:
        return f"{article} {kind} of at most {_bound(maximum)}"
    return f"{article} {kind} from {_bound(minimum)} to {_bound(maximum)}"


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    expectation = _range_words("integer", minimum, maximum)

    def check(path: str, value: Any) -> int:
        number = _as_int(value)
        if number is None or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise _fail(path, expectation, value)
        return number

    return check


def number(minimum: float | None = None, maximum: float | None = None, *, positive: bool = False) -> Check:
    expectation = "a positive number" if positive else _range_words("number", minimum, maximum)

    def check(path: str, value: Any) -> float:
        result = _as_float(value)
        if (
            result is None
            or (positive and result <= 0)
            or (minimum is not None and result < minimum)
            or (maximum is not None and result > maximum)
        ):
            raise _fail(path, expectation, value)
        return result

    return check


def choice(*allowed: str, fold_case: bool = False) -> Check:
    """One of `allowed`, returned in its canonical spelling; with fold_case any capitalisation matches."""
    listed = ", ".join(f'"{a}"' for a in allowed)

    def check(path: str, value: Any) -> str:
        if isinstance(value, str):
            for option in allowed:
                if value == option or (fold_case and value.lower() == option.lower()):
                    return option
            close = difflib.get_close_matches(value, allowed, n=1)
            if close:
                raise UsageError(f'{path} must be one of {listed}, got {show(value)}: did you mean "{close[0]}"?')
        raise _fail(path, f"one of {listed}", value)

    return check


def string(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(path, "a string", value)
    return value


def strings(path: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(path, "a list of strings", value)
    return list(value)


def mapping(path: str, value: Any) -> dict[str, Any]:
    """A free-form mapping (e.g. optimizer params): only the container is checked; its keys belong to someone else."""
    if not isinstance(value, Mapping):
        raise _fail(path, "a mapping of names to values", value)
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, "a mapping with string keys", dict(value))
    return dict(value)


def anything(path: str, value: Any) -> Any:
    """For keys whose content DeepSpeed itself does not validate and dsrun never reads: accepted as written."""
    return value


def strict_boolean(path: str, value: Any) -> bool:
    """For the few keys DeepSpeed compares with `in [True, False]` instead of going through pydantic."""
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value
