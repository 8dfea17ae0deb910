"""Reading YAML recipes: `_base_` inheritance, `key=value` overrides, provenance of every key.

The result of this module is a plain nested dict plus a map `dotted key -> where it came from`
(a file path or "command line"), which `lib.config.validate` turns into typed dataclasses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .shadows import resolve_layer, swap_model

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
BASE_KEY = "_base_"


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """Find a recipe: a path as given, relative to `relative_to`, or a bare name inside config/.

    The `.yaml` suffix may be left out.
    """
    name = Path(name)
    candidates = []
    for stem in (name, name.with_name(name.name + ".yaml")):
        if relative_to is not None and not stem.is_absolute():
            candidates.append(relative_to / stem)
        candidates.append(stem)
        candidates.append(CONFIG_DIR / stem)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise ConfigError(f"config file not found: '{name}' (looked in {relative_to or Path.cwd()} and {CONFIG_DIR})")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first, second):
        super().__init__(f"key '{key}' is given twice (lines {first} and {second}); keep one")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader (no object construction from tags) that refuses a key given twice in one
    mapping, which plain YAML loading silently resolves to the last value."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: construct_mapping reports it
                    pass
        return super().construct_mapping(node, deep=deep)


def safe_load(stream):
    """yaml.safe_load, except that a mapping key given twice raises a yaml.YAMLError naming both lines."""
    return yaml.load(stream, Loader=_StrictLoader)


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = safe_load(f)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a recipe must be a mapping, got {type(data).__name__}")
    return data


def _merge(dst: dict, src: dict, sources: dict, origin: str, prefix: str = "") -> None:
    """Deep-merge `src` into `dst`, recording the origin of every leaf written."""
    for key, value in src.items():
        if not isinstance(key, str):
            raise ConfigError(f"{origin}: key {key!r} under '{prefix or '<top>'}' is not a string")
        dotted = prefix + key
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            sources.setdefault(dotted, origin)
            _merge(dst[key], value, sources, origin, dotted + ".")
        else:
            dst[key] = _copy(value)
            _forget(sources, dotted)
            _record(value, sources, origin, dotted)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _forget(sources: dict, dotted: str) -> None:
    for key in [k for k in sources if k == dotted or k.startswith(dotted + ".")]:
        del sources[key]


def _record(value: Any, sources: dict, origin: str, dotted: str) -> None:
    sources[dotted] = origin
    if isinstance(value, dict):
        for key, sub in value.items():
            _record(sub, sources, origin, f"{dotted}.{key}")


def load_recipe(path: str | Path, _chain: tuple = ()) -> tuple[dict, dict]:
    """Load one recipe and its `_base_` chain. Returns (nested dict, {dotted key: source file})."""
    path = resolve_config_path(path) if not _chain else Path(path)
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"{path}: `_base_` inheritance cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: `{BASE_KEY}` must be a file name or a list of file names")
    merged: dict = {}
    sources: dict = {}
    for base in bases:
        base_path = resolve_config_path(base, relative_to=path.parent)
        base_data, base_sources = load_recipe(base_path, (*_chain, path))
        resolve_layer(merged, base_data, sources, str(base_path), one_layer=False)
        _merge(merged, base_data, sources, "", "")
        sources.update(base_sources)
    resolve_layer(merged, data, sources, str(path))
    _merge(merged, data, sources, str(path))
    return merged, sources


def parse_override(text: str) -> tuple[str, Any, str]:
    """Split `a.b.c=value` into (dotted key, YAML-parsed value, raw value string)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.optimizer.lr=0.02)")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except _DuplicateKey as exc:
        raise ConfigError(f"override '{text}' (command line): {exc}") from None
    except yaml.YAMLError:
        value = raw  # left as text; the schema decides whether text is acceptable
    return key, value, raw


def apply_overrides(data: dict, sources: dict, overrides: list[str], notes: list | None = None) -> dict:
    """Apply `key=value` strings to the nested dict in place. Returns {dotted key: raw string}.
    A key of a pair in lib/config/shadows.py replaces the recipe's other one (a line in `notes`)."""
    if overrides:
        layer: dict = {}
        _set_overrides(layer, {}, overrides)
        resolve_layer(data, layer, sources, "command line", notes)
        swap_model(data, layer, sources, notes)
    return _set_overrides(data, sources, overrides)


def _set_overrides(data: dict, sources: dict, overrides: list[str]) -> dict:
    raws = {}
    for text in overrides:
        key, value, raw = parse_override(text)
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
                # a section the override creates comes from the command line (an unknown key
                # there is reported as such, not as coming from the defaults)
                sources[".".join(parts[:depth + 1])] = "command line"
            node = child
        node[parts[-1]] = value
        _forget(sources, key)
        _record(value, sources, "command line", key)
        raws[key] = raw
    return raws
