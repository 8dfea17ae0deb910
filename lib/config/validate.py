"""Turning a nested dict into the typed dataclass schema, with errors a user can act on.

Supported field types: int, float, bool, str, Any, Optional[X] / X | None, list[X], tuple[X, ...],
Literal[...], dict[str, X], and nested dataclasses. An unknown key, a value of the wrong type or a
value out of its range (lib/config/constraints.py) raises `ConfigError` naming the dotted key, the
file it came from and the closest valid key or value, or the accepted range.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any

from .constraints import check_value
from .errors import ConfigError

_NONE = type(None)
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _where(sources: dict, key: str) -> str:
    origin = sources.get(key)
    while origin is None and "." in key:  # a key inside a dict given as a whole takes the dict's origin
        key = key.rsplit(".", 1)[0]
        origin = sources.get(key)
    return origin or "defaults"


def suggest(name: str, choices: list[str]) -> str:
    """' ; did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
        return f"{origin.__name__}[{args}]"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return "None" if tp is _NONE else getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    """Raised inside coercion; turned into a ConfigError with the key by the caller."""


def _coerce(value: Any, tp: Any, key: str, sources: dict, raws: dict) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch()
        return build_dataclass(tp, value, sources, key + ".", raws)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"invalid value {value!r} for '{key}' (from {_where(sources, key)}): expected {type_name(tp)}"
                + suggest(str(value), [str(a) for a in args])
            )
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        for arg in (a for a in args if a is not _NONE):
            try:
                return _coerce(value, arg, key, sources, raws)
            except _Mismatch:
                continue
        raise _Mismatch()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch()
            return tuple(_coerce(v, a, f"{key}[{i}]", sources, raws) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]", sources, raws) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch()
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}", sources, raws) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _Mismatch()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch()
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value):
            return float(value)  # PyYAML (YAML 1.1) reads `1e-3` (no dot) as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch()
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        if key in raws and not isinstance(value, (dict, list)) and value is not None:
            return raws[key]  # `data.root=2024` from the command line is the text "2024"
        raise _Mismatch()
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch()


def build_dataclass(cls: type, data: dict, sources: dict, prefix: str = "", raws: dict | None = None) -> Any:
    """Build `cls` from `data`, recursively; unknown keys and type mismatches raise ConfigError."""
    raws = raws or {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            dotted = prefix + key
            removed = getattr(cls, "__removed_keys__", {}).get(key)
            if removed:
                raise ConfigError(f"'{dotted}' (from {_where(sources, dotted)}) {removed}")
            valid = [prefix + name for name in fields]
            hint = suggest(dotted, valid) or f"; valid keys here: {', '.join(sorted(valid))}"
            raise ConfigError(f"unknown key '{dotted}' (from {_where(sources, dotted)})" + hint)
    kwargs = {}
    for name, value in data.items():
        dotted = prefix + name
        tp = hints[name]
        try:
            kwargs[name] = _coerce(value, tp, dotted, sources, raws)
        except _Mismatch:
            shown = value if not isinstance(value, str) else f"'{value}'"
            raise ConfigError(
                f"wrong type for '{dotted}' (from {_where(sources, dotted)}): expected {type_name(tp)}, "
                f"got {type(value).__name__} {shown}"
            ) from None
        problem = check_value(cls, name, kwargs[name])
        if problem:
            raise ConfigError(f"invalid value {value!r} for '{dotted}' (from {_where(sources, dotted)}): {problem}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ checks of a section
        raise ConfigError(f"invalid section '{prefix.rstrip('.') or '<top>'}': {exc}") from None
    return obj
