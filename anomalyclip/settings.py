"""Validated configuration dataclasses: one definition per setting gives its check, its CLI flag and its help.

A configuration section derives from `Settings`, names its `section` and declares each field with
`setting(default, help, ge=..., gt=..., le=..., lt=..., choices=..., nonempty=..., cli=...)`. Construction (and
`dataclasses.replace`) checks every value against its annotation and rules and raises ConfigError naming
`section.field`, the value and what is allowed. `from_mapping` builds a (nested) section from a mapping, `add_flags`
adds an argparse flag for every field marked `cli=True` and `overrides_from_args` turns the given flags back into a
mapping, so the command line, config files and profiles all use the same definitions.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import operator
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from anomalyclip.errors import ConfigError

_SPEC = "anomalyclip.setting"
"""The key of a field's `FieldSpec` in its dataclass metadata."""


@dataclass(frozen=True)
class FieldSpec:
    """What a setting means and allows, beyond its type annotation: bounds, choices, non-emptiness, CLI flag."""

    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    nonempty: bool = False
    cli: bool = False


def setting(default: Any, help: str, *, cli: bool = False, **rules: Any) -> Any:
    """A dataclass field with its spec (`ge`/`gt`/`le`/`lt` bounds numbers and each item of a tuple)."""
    if "choices" in rules:
        rules["choices"] = tuple(rules["choices"])
    return dataclasses.field(default=default, metadata={_SPEC: FieldSpec(help, cli=cli, **rules)})


class Settings:
    """Base of configuration sections (frozen or not): every field is checked (and lists made tuples) when the
    section is built."""

    section: ClassVar[str] = ""
    """The section's name in error messages and nested mappings (`train` gives `train.epochs`)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_value(type(self), f.name, getattr(self, f.name)))


@dataclass(frozen=True)
class Leaf:
    """A setting reached from a top-level class: its path of field names, annotation, spec, default and the section
    class that declares it."""

    path: tuple[str, ...]
    hint: Any
    spec: FieldSpec
    default: Any
    owner: type

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def check(self, value: Any) -> Any:
        """`value` checked for this setting (see `check_value`)."""
        return check_value(self.owner, self.name, value)


class _Mismatch(Exception):
    """A value that does not fit an annotation."""


# --------------------------------------------------------------------------------------------------- annotations


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Settings)


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _describe(hint: Any) -> str:
    """The annotation in words: 'an integer', 'a list of 2 numbers', 'a string or null'."""
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if typing.get_origin(hint) is Literal:
        return f"one of {list(typing.get_args(hint))}"
    if (args := _union_args(hint)) is not None:
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}" if len(set(args)) == 1 else f"a list {list(args)}"
    return f"a {getattr(hint, '__name__', hint)}"


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, _describe(hint))


def _coerce(value: Any, hint: Any) -> Any:
    """`value` as `hint` wants it (int -> float for numbers, list -> tuple), or _Mismatch."""
    if hint is Any:
        return value
    if hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif typing.get_origin(hint) is Literal:
        if value in typing.get_args(hint):
            return value
    elif (args := _union_args(hint)) is not None:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except _Mismatch:
                pass
    elif typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (list, tuple)):
            items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
            if len(items) == len(value):
                return tuple(_coerce(v, h) for v, h in zip(value, items, strict=True))
    elif _is_section(hint):
        if isinstance(value, hint):
            return value
    else:
        raise TypeError(f"setting annotation {hint!r} is not supported")
    raise _Mismatch


def _bounds(spec: FieldSpec) -> list[tuple[str, float, Any]]:
    """The spec's bounds as (symbol, bound, comparison)."""
    pairs = (
        (">=", spec.ge, operator.ge),
        (">", spec.gt, operator.gt),
        ("<=", spec.le, operator.le),
        ("<", spec.lt, operator.lt),
    )
    return [(symbol, bound, compare) for symbol, bound, compare in pairs if bound is not None]


def allowed(hint: Any, spec: FieldSpec) -> str:
    """What a setting accepts, in words: 'an integer >= 1', 'one of ['vv', 'qq', 'kk']'."""
    if spec.choices is not None:
        return f"one of {list(spec.choices)}"
    text = _describe(hint)
    bounds = " and ".join(f"{op} {bound:g}" for op, bound, _ in _bounds(spec))
    if bounds:
        text += f" {'each ' if typing.get_origin(hint) is tuple else ''}{bounds}"
    return text + (", not empty" if spec.nonempty else "")


def _within_rules(value: Any, spec: FieldSpec) -> bool:
    if spec.choices is not None and value not in spec.choices:
        return False
    if spec.nonempty and not value:
        return False
    numbers = value if isinstance(value, tuple) else (value,)
    return all(
        compare(n, bound)
        for n in numbers
        if isinstance(n, (int, float)) and not isinstance(n, bool)
        for _, bound, compare in _bounds(spec)
    )


# ---------------------------------------------------------------------------------------------------- validation


def field_spec(cls: type, name: str) -> FieldSpec:
    """The spec of field `name` of `cls`; TypeError for a field declared without `setting(...)`."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get(_SPEC)
    if spec is None:
        raise TypeError(f"{cls.__name__}.{name} is declared without setting(...): it has no help, bounds or flag")
    return spec


def check_value(cls: type, name: str, value: Any) -> Any:
    """`value` checked (and normalised) for field `name` of `cls`, or ConfigError naming `section.name`."""
    hint = _hints(cls)[name]
    path = f"{cls.section}.{name}" if getattr(cls, "section", "") else name
    if _is_section(hint):
        if not isinstance(value, hint):
            raise ConfigError(f"{path} = {value!r}: expected a {hint.__name__} (or a mapping of its settings)")
        return value
    spec = field_spec(cls, name)
    try:
        coerced = _coerce(value, hint)
    except _Mismatch:
        coerced = _Mismatch
    if coerced is _Mismatch or not _within_rules(coerced, spec):
        flag = f" (--{name.replace('_', '-')})" if spec.cli else ""
        raise ConfigError(f"{path} = {value!r}: expected {allowed(hint, spec)}{flag}")
    return coerced


def leaves(cls: type, path: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every setting of `cls` and of its nested sections, depth first, in declaration order."""
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if _is_section(hint):
            yield from leaves(hint, (*path, f.name))
        else:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            yield Leaf((*path, f.name), hint, field_spec(cls, f.name), default, cls)


def from_mapping(cls: type, data: Mapping[str, Any], path: str = "") -> Any:
    """An instance of `cls` from a (possibly partial) nested mapping; unknown keys are errors (the class checks and
    coerces the values, e.g. lists into tuples)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f" in section {path!r}" if path else ""
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}{where}; expected some of {sorted(known)}")
    kwargs = {}
    for key, value in data.items():
        hint = _hints(cls)[key]
        nested = _is_section(hint) and not isinstance(value, hint)
        kwargs[key] = from_mapping(hint, value, f"{path}.{key}" if path else key) if nested else value
    return cls(**kwargs)


def to_plain(value: Any) -> Any:
    """A section as nested dicts and lists (tuples become lists), ready for YAML or JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------------- files


_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
"""Floats as YAML 1.2 reads them; YAML 1.1 (PyYAML) reads `1e-3` as the string '1e-3'."""


@functools.cache
def yaml_loader() -> type:
    """yaml's SafeLoader reading numbers as YAML 1.2 does; for config files and profiles alike."""
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 floats."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))
    return Loader


def read_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON settings file (YAML 1.2 numbers: `lr: 1e-3` is a float), or ConfigError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=yaml_loader())  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML/JSON: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of configuration sections, got {type(data).__name__}")
    return data


def load_settings(cls: type, path: str | Path) -> Any:
    """An instance of `cls` from a YAML or JSON file holding a (partial) mapping of its settings; errors name the
    file."""
    try:
        return from_mapping(cls, read_file(path))
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from err


# ------------------------------------------------------------------------------------------------------- CLI


def _flag_dest(leaf: Leaf, prefix: str) -> str:
    return f"{prefix}{leaf.name}".replace("-", "_")


def _argparse_options(hint: Any, spec: FieldSpec) -> dict[str, Any]:
    """type / nargs / choices / action for an annotation."""
    if (args := _union_args(hint)) is not None:
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is Literal or spec.choices is not None:
        choices = list(spec.choices or typing.get_args(hint))
        return {"choices": choices, "type": type(choices[0])}
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        variable = len(args) == 2 and args[1] is Ellipsis
        return {"type": args[0], "nargs": "+" if variable else len(args)}
    return {"type": hint}


def cli_leaves(cls: type) -> list[Leaf]:
    """The settings of `cls` (nested sections included) marked `cli=True`."""
    return [leaf for leaf in leaves(cls) if leaf.spec.cli]


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *, prefix: str = "") -> None:
    """Add `--<prefix><name>` (underscores as dashes) for every `cli=True` setting of `cls`; each defaults to None,
    so only the flags given override a file or the class's defaults (see `overrides_from_args`)."""
    for leaf in cli_leaves(cls):
        dest = _flag_dest(leaf, prefix)
        shown = list(leaf.default) if isinstance(leaf.default, tuple) else leaf.default
        parser.add_argument(f"--{dest.replace('_', '-')}", dest=dest, default=None,
                            help=f"{leaf.spec.help} [{leaf.dotted}, default {shown}]".replace("%", "%%"),
                            **_argparse_options(leaf.hint, leaf.spec))  # fmt: skip


def overrides_from_args(args: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The flags `add_flags(parser, cls, prefix=prefix)` added and that were given, as a nested mapping for
    `from_mapping` (e.g. {'train': {'epochs': 3}})."""
    data: dict[str, Any] = {}
    for leaf in cli_leaves(cls):
        value = getattr(args, _flag_dest(leaf, prefix), None)
        if value is not None:
            section = data
            for key in leaf.path[:-1]:
                section = section.setdefault(key, {})
            section[leaf.name] = tuple(value) if isinstance(value, list) else value
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, section by section."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
