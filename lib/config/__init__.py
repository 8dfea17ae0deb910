"""Typed YAML recipes: `load_config("demo.yaml", ["train.optimizer.lr=0.02"])` -> `Config`.

See docs/ARCHITECTURE.md. The schema sections live in `schema_*.py`, one per owner.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml

from .errors import ConfigError
from .loader import CONFIG_DIR, _copy, _record, apply_overrides, load_recipe, resolve_config_path
from .schema import Config, ModelConfig
from .validate import build_dataclass, suggest

__all__ = ["Config", "ConfigError", "ModelConfig", "load_config", "config_to_dict", "save_config",
           "resolve_config_path", "suggest", "CONFIG_DIR", "dump_config", "config_from_dict"]


def load_config(path_or_name: str | os.PathLike, overrides: list[str] | tuple = ()) -> Config:
    """Load a recipe (with its `_base_` chain), apply `key=value` overrides, validate against the schema."""
    data, sources = load_recipe(path_or_name)
    return _build(data, sources, overrides)


def _build(data: dict, sources: dict, overrides) -> Config:
    """Overrides applied, the schema built; `cfg.notes`: what the command line replaced or changed
    nothing (lib/config/shadows.py), logged when the run starts (lib/engine/launch.py)."""
    from .shadows import inert_overrides

    notes: list[str] = []
    raws = apply_overrides(data, sources, list(overrides), notes)
    cfg = build_dataclass(Config, data, sources, "", raws)
    cfg.notes = notes + inert_overrides(cfg, raws)
    return cfg


def config_from_dict(data: dict, overrides: list[str] | tuple = (), origin: str = "saved config") -> Config:
    """A resolved recipe kept as a dict (a checkpoint's "config", a run's config.yaml) with
    `key=value` overrides applied, validated like a recipe file; errors name `origin`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the saved recipe is not a mapping")
    data, sources = _copy(data), {}
    for key, value in data.items():
        _record(value, sources, origin, key)
    return _build(data, sources, overrides)


def config_to_dict(cfg) -> dict:
    """The resolved config as plain dicts/lists (tuples become lists), ready for YAML or JSON."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(cfg))


def dump_config(cfg) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg, path: str | os.PathLike) -> Path:
    """Write the resolved recipe atomically (temporary file, then rename)."""
    from lib.io import atomic_write_text
    return atomic_write_text(path, dump_config(cfg))
