"""Pairs of keys where one, once switched on, makes the other do nothing (issue 23: a recipe's
`train.epochs: 800` silently outlived `train.iterations=3` on the command line).

Each layer of a recipe (a `_base_` file, the recipe file, the command line) is applied over the
layers below it; for every pair here the layer that names a key of the pair decides:
- it sets only the plain key while a lower layer switched the other on: the switch is dropped
  (back to its default, off), so the key the user wrote is the one that acts;
- it switches the other on: that one acts, as the schema documents;
- it sets both with the switch on: an error naming both keys (one of them would be ignored).
What the command line replaces this way is said in one line (`notes`), logged when the run starts.

The audit of the schema (lib/config/schema*.py) found these two pairs; keys that do nothing
under the variant a name chooses (SGD momentum under adam, `scheduler.power` under cosine, ...)
are `inert_overrides` below.
"""
from __future__ import annotations

from typing import Any

from .errors import ConfigError

_MISSING = object()


def _on(value) -> bool:
    """A switch key is on when it is a positive number (both switches default to 0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


# (plain key, switch key that wins over it when on)
PAIRS = (
    ("train.iterations", "train.epochs"),
    ("train.scheduler.warmup_iters", "train.scheduler.warmup_ratio"),
)


def get(tree: dict, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node[part]
    del node[leaf]


def resolve_layer(below: dict, layer: dict, sources: dict, origin: str, notes: list | None = None,
                  one_layer: bool = True) -> None:
    """Before `layer` (nested dict, from `origin`) is merged over `below` (the layers under it,
    merged, with `sources` naming where each key came from): apply the rules of the module
    docstring, editing `below` in place. `notes` (when given) receives one line per replacement.
    `one_layer`: False for a `_base_` file's merged chain, where both keys may come from two of its
    own layers (already resolved there), so that is no error."""
    for plain, switch in PAIRS:
        p, s = get(layer, plain), get(layer, switch)
        if p is not _MISSING and s is not _MISSING and _on(s) and one_layer:
            raise ConfigError(f"'{plain}' and '{switch}' are both set ({origin}): '{switch}' > 0 replaces "
                              f"'{plain}'; keep one (or set {switch}=0)")
        if p is not _MISSING and s is _MISSING and _on(get(below, switch)):
            old = get(below, switch)
            if notes is not None:
                notes.append(f"{plain}={p} ({origin}) replaces {switch}={old} (from {sources.get(switch) or 'a base recipe'}): "
                             f"{switch} is back to 0")
            _drop(below, switch)
            sources.pop(switch, None)
        if _on(s) and p is _MISSING and notes is not None and get(below, plain) is not _MISSING:
            notes.append(f"{switch}={s} ({origin}) replaces {plain}={get(below, plain)} "
                         f"(from {sources.get(plain) or 'a base recipe'})")


def swap_model(below: dict, layer: dict, sources: dict, notes: list | None = None) -> None:
    """The command line (`layer`) names another `model.name` than the recipe (`below`): the
    recipe's `model.args` were written for its own model, so they are dropped (one line in `notes`);
    the `model.args` / `model.args.<key>=...` given on the command line still apply."""
    new, old = get(layer, "model.name"), get(below, "model.name")
    args = get(below, "model.args")
    if new is _MISSING or old is _MISSING or new == old or not isinstance(args, dict) or not args:
        return
    below["model"]["args"] = {}
    for key in [k for k in sources if k.startswith("model.args.")]:
        del sources[key]
    if notes is not None:
        notes.append(f"model.name={new} (command line) replaces {old}: the recipe's model.args for {old} "
                     f"({', '.join(sorted(args))}) are dropped; {new} is built with its defaults and any "
                     "model.args given on the command line")


# Keys that only act under some values of a name key: {key: (name key, names it acts under)}.
_ONLY_UNDER = {
    "train.optimizer.momentum": ("train.optimizer.name", ("sgd",)),
    "train.optimizer.nesterov": ("train.optimizer.name", ("sgd",)),
    "train.optimizer.betas": ("train.optimizer.name", ("adam", "adamw")),
    "train.scheduler.power": ("train.scheduler.name", ("poly",)),
    "train.scheduler.milestones": ("train.scheduler.name", ("step",)),
    "train.scheduler.gamma": ("train.scheduler.name", ("step",)),
    "train.scheduler.onecycle_pct_start": ("train.scheduler.name", ("onecycle",)),
    "train.scheduler.onecycle_div_factor": ("train.scheduler.name", ("onecycle",)),
    # and keys under a switch that is off
    "train.ema.decay": ("train.ema.enabled", (True,)),
    "train.ema.warmup": ("train.ema.enabled", (True,)),
    "eval.tta.rotations": ("eval.tta.enabled", (True,)),
    "eval.tta.flips": ("eval.tta.enabled", (True,)),
    "eval.tta.scales": ("eval.tta.enabled", (True,)),
    "eval.normalize_plot": ("eval.plots", (True,)),
    "export.ply_labels": ("export.ply", (True,)),
}


def inert_overrides(cfg, override_keys) -> list[str]:
    """One line per command-line key that does nothing under the recipe's choice of name (e.g.
    `train.optimizer.momentum=0.8` when the optimizer is adam). `cfg`: the built Config."""
    lines = []
    for key in override_keys:
        if key not in _ONLY_UNDER:
            continue
        name_key, names = _ONLY_UNDER[key]
        value = cfg
        for part in name_key.split("."):
            value = getattr(value, part)
        if value not in names:
            lines.append(f"{key} (command line) has no effect: {name_key} is {value!r} "
                         f"(it acts under {' / '.join(map(str, names))})")
    return lines
