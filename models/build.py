"""Model registry and `build_model`: look a network up by class name, check the recipe's args.

The recipe's `model.args` is a free dict; it is checked here against the constructor's signature
so that a typo or a wrong type fails at start-up with a message naming the arg, not deep inside a run.
"""
import difflib
import inspect
import types
import typing

import torch.nn as nn

from lib.config.errors import ConfigError

MODELS = {}

# Supplied by build_model from the dataset, never by the recipe.
_PROVIDED = ("in_channels", "num_classes")


class ModelConfigError(ConfigError):
    """The `model` section names an unknown model, an unknown arg, or an arg of the wrong type."""


def register_model(cls):
    """Class decorator: make `cls` buildable by its class name. Returns `cls` unchanged."""
    register_alias(cls.__name__, cls)
    return cls


def register_alias(alias, cls):
    """Make `cls` buildable under a second name `alias` (e.g. MinkUNet34C for Res16UNet34C)."""
    if alias in MODELS:
        raise ValueError(f"model {alias!r} is registered twice")
    MODELS[alias] = cls


def closest_name(word, choices, n=1):
    """The `n` valid names closest to `word` (for "did you mean" hints)."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.0)


def value_fits(value, annotation):
    """True if `value` fits `annotation`; handles int/float/bool/str, Optional/Union, tuple/list."""
    if annotation is inspect.Parameter.empty or annotation is typing.Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (tuple, list):
        # YAML gives lists where a constructor may declare tuples: accept either sequence kind.
        if not isinstance(value, (tuple, list)):
            return False
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return not args or all(value_fits(v, args[0]) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        # YAML reads `0` as int; an int is a fine float. A bool is not.
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation):
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def check_model_args(cls, args):
    """Raise ModelConfigError unless every key of `args` is a keyword of `cls` with a fitting type."""
    hints = typing.get_type_hints(cls.__init__)
    params = {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    settable = [name for name in params if name not in _PROVIDED]
    for key, value in args.items():
        if key in _PROVIDED:
            raise ModelConfigError(
                f"model.args.{key}: set by the dataset, not the recipe; remove it"
            )
        if key not in params:
            hint = closest_name(key, settable)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ModelConfigError(
                f"model.args.{key}: {cls.__name__} has no such argument{suggestion}"
            )
        annotation = hints.get(key, inspect.Parameter.empty)
        if not value_fits(value, annotation):
            raise ModelConfigError(
                f"model.args.{key}: expected {_type_name(annotation)}, "
                f"got {type(value).__name__} {value!r}"
            )
    missing = [
        name for name in settable if params[name].default is inspect.Parameter.empty and name not in args
    ]
    if missing:
        raise ModelConfigError(f"model.args: {cls.__name__} needs {', '.join(missing)}")


def build_model(model_cfg, in_channels, num_classes) -> nn.Module:
    """Build the model named `model_cfg.name` with keyword args `model_cfg.args` (a dict or None).

    `in_channels` (features per voxel) and `num_classes` come from the dataset's meta.
    """
    name = model_cfg.name
    if name not in MODELS:
        hints = closest_name(name, MODELS, 3)
        raise ModelConfigError(
            f"model.name: unknown model {name!r}; closest: {', '.join(hints)}"
        )
    cls = MODELS[name]
    args = dict(model_cfg.args or {})
    check_model_args(cls, args)
    return cls(in_channels=in_channels, num_classes=num_classes, **args)
