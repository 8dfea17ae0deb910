"""Hooks: the base class, the registry of hook names a recipe lists (`train.hooks`), and the order
they run in.

A hook talks to the others only through the trainer's EventStorage (lib/engine/storage.py): it
declares the per-step objects and scalars it `reads` and `writes`. Order rule (deterministic): the
recipe's order, except that a hook runs after every listed hook that writes something it reads
(a stable topological sort; a cycle is a config error). E.g. `checkpoint` reads "new_best", which
`validation` writes in the same step, and `tensorboard` reads "scalars", which every hook that
publishes scalars writes, so it flushes last whatever the recipe's order.
"""
from lib.config import ConfigError, suggest


class HookBase:
    """Callbacks around the loop. `after_train` runs on every exit path (exceptions included).

    Class attributes: `name` (the registry name), `reads` / `writes` (storage names). A hook with
    state that must survive a resume returns it from `state_dict()` (non-empty dict of tensors and
    plain containers) and takes it back in `load_state_dict`.
    """

    name = ""
    reads: tuple = ()
    writes: tuple = ()

    def before_train(self, trainer): ...

    def after_step(self, trainer): ...

    def after_train(self, trainer): ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


HOOKS = {}  # name -> hook class with a `build(env)` classmethod


def register_hook(cls):
    """Class decorator: make `cls` available to recipes as `train.hooks: [..., cls.name]`."""
    if not cls.name or cls.name in HOOKS:
        raise ValueError(f"hook {cls.__name__}: name {cls.name!r} is empty or taken")
    HOOKS[cls.name] = cls
    return cls


def check_hook_names(names) -> None:
    """ConfigError (closest name suggested) for an unknown or repeated name in `train.hooks`."""
    seen = set()
    for name in names:
        if name not in HOOKS:
            raise ConfigError(f"train.hooks: unknown hook '{name}'" + (suggest(name, list(HOOKS))
                              or f"; known hooks: {', '.join(HOOKS)}"))
        if name in seen:
            raise ConfigError(f"train.hooks: '{name}' is listed twice")
        seen.add(name)


def build_hooks(names, env) -> list:
    """Hooks named by `train.hooks`, built with `cls.build(env)` and put in running order."""
    check_hook_names(names)
    return order_hooks([HOOKS[name].build(env) for name in names])


def order_hooks(hooks: list) -> list:
    """Stable topological order: recipe order, each hook after the hooks whose writes it reads."""
    pending = list(hooks)
    ordered = []
    while pending:
        for hook in pending:
            needs = set(hook.reads)
            if not any(needs & set(other.writes) for other in pending if other is not hook):
                ordered.append(hook)
                pending.remove(hook)
                break
        else:
            raise ConfigError("train.hooks: circular reads/writes among "
                              + ", ".join(f"{h.name} (reads {list(h.reads)}, writes {list(h.writes)})" for h in pending))
    return ordered
