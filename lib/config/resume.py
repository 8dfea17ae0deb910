"""What a resume may change. A run folder describes one run: `--resume` with overrides that change
what is trained (data, voxel size, model, loss, optimizer, augmentation, seed, ...) would continue
from weights trained under another recipe while `config.yaml` claimed the new one.

Keys under RESUME_SAFE change how long the run goes, how it is watched, where it runs or what a
test/export does, not what is learnt; every other key of the recipe changes the run. A resume that
changes one of those is refused, naming each key (old -> new), unless the user passes
`--allow-config-change`, in which case the changes are appended to `<run>/config_changes.json`.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConfigError

# Dotted keys (or prefixes ending with ".") that a resume may change freely.
RESUME_SAFE = (
    "device", "engine", "dist.",
    "train.iterations", "train.epochs", "train.stop_at", "train.hooks", "train.val_every",
    "train.log_every", "train.ckpt_every", "train.test_split", "train.progress", "train.cpu_threads",
    "train.max_bad_steps",
    # where the data lives and how it is loaded; the voxel cap and budget only pack batches
    "data.root", "data.raw_root", "data.cache_dir", "data.num_workers", "data.limit_numpoints",
    "data.memory_budget",
    "eval.", "export.", "predict.", "profile.",
)
CHANGES_FILE = "config_changes.json"


def is_resume_safe(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESUME_SAFE)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def config_changes(old: dict, new: dict) -> dict:
    """{dotted key: (old, new)} for every leaf that differs (a missing side is None)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _show(value) -> str:
    return "(unset)" if value is None else yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def check_resume_config(run_dir, new: dict, allow: bool = False) -> dict:
    """Compare the recipe a run folder was started with (`<run>/config.yaml`) with the one a resume
    brings (`new`, config_to_dict of the resolved config). Returns the run-changing differences
    {key: (old, new)} (empty when there are none, or when the folder holds no config.yaml).

    Raises ConfigError naming each run-changing key unless `allow`; with `allow` the caller
    records them (`record_changes`)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    old = yaml.safe_load(path.read_text()) or {}
    changed = {k: v for k, v in config_changes(old, new).items() if not is_resume_safe(k)}
    if changed and not allow:
        listed = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in changed.items())
        raise ConfigError(f"--resume would change what {path.parent} trains ({listed}); start a new run "
                          "(another --output-dir, --weights to initialise from it) or pass "
                          "--allow-config-change to continue and record the change")
    return changed


def record_changes(run_dir, changed: dict) -> Path:
    """Append {time, changes: {key: {old, new}}} to `<run>/config_changes.json`."""
    import json
    import time

    from lib.io import atomic_write_json

    path = Path(run_dir) / CHANGES_FILE
    history = json.loads(path.read_text()) if path.is_file() else []
    history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": {k: {"old": a, "new": b} for k, (a, b) in changed.items()}})
    return atomic_write_json(path, history)
