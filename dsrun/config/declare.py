"""How a config key is declared: once, with its check, default, DeepSpeed aliases and whether dsrun acts on it.

A section of the config is a frozen dataclass deriving from `Section`. A key dsrun acts on is a field declared with
`key(check, default)` or, for a nested section, `section(cls)`; the field's default is DeepSpeed's. A key dsrun
accepts but does not act on goes in the class's `unacted` table with the reason, and a deprecated key that the
section rewrites into its current form goes in `mapped`. Everything else is derived from these declarations: the
catalogue the validator checks a config against, the "no effect" notes, and the typed object the runtime reads.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, TypeVar

from dsrun.config.checks import Check, anything, show
from dsrun.errors import UsageError

_DECLARATION = "dsrun.config.key"


@dataclass(frozen=True)
class Key:
    """What a field's metadata says about the config key behind it."""

    check: Check | None  # None for a nested section, whose class checks its own keys
    section: type[Section] | None
    name: str | None  # the key's spelling in the config, when the attribute is named otherwise
    aliases: tuple[str, ...]  # other spellings DeepSpeed accepts for the same setting
    auto: bool  # "auto" is accepted: Hugging Face's Trainer / Accelerate or dsrun itself fill it in
    alias_loses: bool  # name and alias both given: the name wins and the alias is noted (else: must agree)


def key(check: Check, default: Any, *, name: str | None = None, aliases: tuple[str, ...] = (),
        auto: bool = False) -> Any:
    """A key dsrun acts on, holding a value."""
    declaration = {_DECLARATION: Key(check, None, name, aliases, auto, False)}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: copy.copy(default), metadata=declaration)
    return field(default=default, metadata=declaration)


def section(cls: type[Section], *, name: str | None = None, aliases: tuple[str, ...] = (), optional: bool = False,
            alias_loses: bool = False) -> Any:
    """A nested section dsrun acts on (at least partly); `optional`: None when the config leaves it out."""
    declaration = {_DECLARATION: Key(None, cls, name, aliases, False, alias_loses)}
    if optional:
        return field(default=None, metadata=declaration)
    return field(default_factory=cls, metadata=declaration)


@dataclass(frozen=True)
class Unacted:
    """A key dsrun accepts, checks as DeepSpeed does, and does not act on; `reason` is the note a config gets."""

    entry: Check | Mapping[str, Any]  # a value check, or the keys of a whole section (checks or nested mappings)
    reason: str
    auto: bool = False


@dataclass(frozen=True)
class Mapped:
    """A deprecated key the section's `prepare` rewrites into `onto` (an attribute path within the section)."""

    check: Check
    onto: str


def because(reason: str, **checks: Check | Mapping[str, Any]) -> dict[str, Unacted]:
    """Several unacted keys that share one reason."""
    return {name: Unacted(entry, reason) for name, entry in checks.items()}


S = TypeVar("S", bound="Section")


class Section:
    """Base of the declared sections. Subclasses are frozen dataclasses; the hooks default to doing nothing."""

    unacted: ClassVar[Mapping[str, Unacted]] = {}
    mapped: ClassVar[Mapping[str, Mapped]] = {}

    @classmethod
    def prepare(cls, clean: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        """Rewrite the `mapped` deprecated keys of a validated section into their current form, noting each."""
        return clean

    def settle(self: S, clean: Mapping[str, Any], notes: list[str]) -> S:
        """Checks across keys once the section is built; notes for settings that only some combinations use."""
        return self


# ---- the catalogue the validator walks ----


@dataclass(frozen=True)
class Entry:
    """One key of the catalogue: its check, or the entries of the section it opens."""

    check: Check | None
    children: Mapping[str, Entry] | None
    auto: bool


Catalogue = Mapping[str, Entry]


def declared_keys(cls: type[Section]) -> Iterator[tuple[str, dataclasses.Field[Any], Key]]:
    """Every (config spelling, field, declaration) of a section, aliases included."""
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]  # sections are dataclasses
        declaration = item.metadata.get(_DECLARATION)
        if declaration is None:
            continue
        for spelling in (declaration.name or item.name, *declaration.aliases):
            yield spelling, item, declaration


def catalogue(cls: type[Section]) -> dict[str, Entry]:
    """The keys a section accepts, derived from its declaration."""
    entries: dict[str, Entry] = {}
    for spelling, _item, declaration in declared_keys(cls):
        if declaration.section is not None:
            entries[spelling] = Entry(None, catalogue(declaration.section), False)
        else:
            entries[spelling] = Entry(declaration.check, None, declaration.auto)
    for name, mapped in cls.mapped.items():
        entries[name] = Entry(mapped.check, None, False)
    for name, unacted in cls.unacted.items():
        entries[name] = _loose_entry(unacted.entry, unacted.auto)
    return entries


def _loose_entry(entry: Check | Mapping[str, Any], auto: bool) -> Entry:
    if isinstance(entry, Mapping):
        return Entry(None, {name: _loose_entry(child, False) for name, child in entry.items()}, False)
    return Entry(entry, None, auto or entry is anything)


def iter_paths(entries: Catalogue, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Every (dotted path, entry) of a catalogue, sections before their keys."""
    for name, entry in entries.items():
        path = f"{prefix}{name}"
        yield path, entry
        if entry.children is not None:
            yield from iter_paths(entry.children, f"{path}.")


# ---- building the typed sections ----

_ABSENT = object()


def build(cls: type[S], clean: Mapping[str, Any], notes: list[str], prefix: str = "") -> S:
    """The typed section from its validated keys: declared defaults for what is absent, aliases resolved."""
    given = cls.prepare(dict(clean), notes)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]  # sections are dataclasses
        declaration = item.metadata.get(_DECLARATION)
        if declaration is None:
            continue
        name = declaration.name or item.name
        value = _one_spelling(given, name, declaration, prefix, notes)
        if declaration.section is not None:
            if value is _ABSENT and item.default is None:
                continue  # an optional section the config leaves out
            value = build(declaration.section, {} if value is _ABSENT else value, notes, f"{prefix}{name}.")
        if value is not _ABSENT:
            values[item.name] = value
    return cls(**values).settle(given, notes)


def _one_spelling(given: Mapping[str, Any], name: str, declaration: Key, prefix: str, notes: list[str]) -> Any:
    """The value under the key's name or one of its aliases; two spellings with different values are an error."""
    present = [(spelling, given[spelling]) for spelling in (name, *declaration.aliases) if spelling in given]
    if not present:
        return _ABSENT
    first_spelling, first = present[0]
    for spelling, value in present[1:]:
        if declaration.alias_loses:
            notes.append(f"{prefix}{spelling} is accepted but dsrun does not act on it: {prefix}{first_spelling}"
                         f" is also given, and {prefix}{first_spelling} wins")
        elif value != first:
            raise UsageError(f"{prefix}{first_spelling} ({show(first)}) and {prefix}{spelling} ({show(value)}) are"
                             " two spellings of one setting with different values: keep one")
    return first


# ---- the "no effect" notes ----


def unacted_notes(cls: type[Section], clean: Mapping[str, Any], prefix: str = "") -> list[str]:
    """One line per key of a validated config that dsrun does not act on.

    A section dsrun does not act on at all gets one line for the whole section, and none when it says
    `"enabled": false`: DeepSpeed ignores such a section too, so nothing is lost.
    """
    by_spelling = {spelling: (item, declaration) for spelling, item, declaration in declared_keys(cls)}
    lines = []
    for name, value in clean.items():
        path = f"{prefix}{name}"
        if name in by_spelling:
            _item, declaration = by_spelling[name]
            canonical = declaration.name or _item.name
            if declaration.alias_loses and name != canonical and canonical in clean:
                continue  # noted when built: the other spelling wins
            if isinstance(value, Mapping) and value.get("enabled") is False:
                continue  # DeepSpeed judges a section's settings only when it is on: nothing is lost
            if declaration.section is not None and isinstance(value, Mapping):
                lines.extend(unacted_notes(declaration.section, value, f"{path}."))
        elif name in cls.unacted:
            if isinstance(value, Mapping) and value.get("enabled") is False:
                continue
            lines.append(f"{path} is accepted but dsrun does not act on it: {cls.unacted[name].reason}")
    return lines


def acted_paths(cls: type[Section], prefix: str = "", attribute: str = "") -> Iterator[tuple[str, str]]:
    """Every (config path, attribute path) of a key dsrun acts on: declared fields, their aliases, mapped keys."""
    for spelling, item, declaration in declared_keys(cls):
        path, attr = f"{prefix}{spelling}", f"{attribute}{item.name}"
        if declaration.section is not None:
            yield from acted_paths(declaration.section, f"{path}.", f"{attr}.")
        else:
            yield path, attr
    for name, mapped in cls.mapped.items():
        yield f"{prefix}{name}", f"{attribute}{mapped.onto}"
