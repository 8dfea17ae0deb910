"""Atomic file writes: write to a temporary name in the same folder, then rename over the target.

A crash leaves either the old complete file or none, never a torn one, so a re-run can treat every
existing file as complete.
"""
import os
from pathlib import Path


def atomic_write(path: Path, write) -> Path:
    """Call `write(tmp_path)` then rename tmp_path to `path` (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` atomically, skipping the write when the file already holds exactly it."""
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return path
    return atomic_write(path, lambda tmp: tmp.write_text(text))
