"""The small records a run leaves for its report, and how they are read back.

- `<run>/scalars.jsonl` (written by the tensorboard hook, lib/engine/hooks.py): one JSON object per
  training step, {"iteration": i, "<scalar name>": value, ...}.
- `<run>/run_info.json` (written by train and test modes): facts the scores files do not hold,
  {"mode": "train" | "test", "parameters": parameter elements of the model, "weights": the checkpoint a
  test run loaded (absolute path), "split": the split it tested}.
"""
import json
from pathlib import Path

RUN_INFO = "run_info.json"
SCALARS = "scalars.jsonl"


def count_parameters(model) -> int:
    """Number of parameter elements of `model` (an nn.Module; buffers such as BN statistics excluded)."""
    return int(sum(p.numel() for p in model.parameters()))


def write_run_info(run_dir, **fields) -> Path:
    """Merges `fields` into <run_dir>/run_info.json (atomically); returns its path."""
    from lib.io import atomic_write_json

    path = Path(run_dir) / RUN_INFO
    info = read_json(path) or {}
    info.update(fields)
    atomic_write_json(path, info)
    return path


def read_json(path):
    """The JSON object in `path`, None when the file does not exist. A file that is not JSON raises
    ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON file ({exc.msg} at line {exc.lineno})") from None


def read_scalars(path) -> dict:
    """{name: [[iteration, value], ...] sorted by iteration} from a scalars.jsonl; {} when absent.

    A resumed run appends the steps after its checkpoint again: the last value written for an
    (iteration, name) wins. A truncated last line (a killed run) is skipped; any other line that is
    not a JSON object raises ValueError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    series: dict = {}
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            iteration = int(record.pop("iteration"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            if number == len(lines):
                break  # the line a killed run was writing
            raise ValueError(f"{path}: line {number} is not a scalars record "
                             "({\"iteration\": i, name: value, ...})") from None
        for name, value in record.items():
            if isinstance(value, (int, float)):
                series.setdefault(name, {})[iteration] = float(value)
    return {name: sorted([i, v] for i, v in points.items()) for name, points in series.items()}
