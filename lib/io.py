"""Atomic file writes: a temporary file in the target's folder, fsynced, then renamed over the
target, so a reader (or a crash) sees either the old complete file or the new one, never a torn one.

Temporary files are named `.<name>.<random>.tmp`; a run killed mid-write leaves one behind, and
`remove_stale_temporaries(folder)` (called when a run starts or resumes) deletes them. Files get the
mode an ordinary `open()` would give (0666 minus the umask), not mkstemp's private 0600, so a group
can read run folders. A full disk (ENOSPC / EDQUOT) raises lib.errors.DiskFullError naming `path`
(the OSError of a failed write names no file).
"""
import json
import os
import tempfile
from pathlib import Path

from lib.errors import UnwritableDirError, UserError, naming_disk_full


def _umask() -> int:
    # The process umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, mode: str = "wb") -> Path:
    """Call `write(f)` on a temporary file opened with `mode` beside `path`, then rename it onto
    `path` (parents are created). Returns `path`. DiskFullError naming `path` on a full disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with naming_disk_full(path), os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path, obj, indent: int = 1) -> Path:
    """json.dump `obj` to `path` atomically."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=indent), mode="w")


def ensure_writable_dir(folder, option: str) -> Path:
    """Create `folder` (and its parents) and check a file can be written in it; otherwise raise
    UnwritableDirError naming the folder and `option` (the command-line option that chose it).
    Probing with a real file is what works for root too, whom permission bits do not stop but a
    read-only mount does."""
    folder = Path(folder)
    try:
        with naming_disk_full(folder):
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write_probe.", suffix=".tmp", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        if isinstance(exc, UserError):  # a full disk names itself
            raise
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or str(exc)
        raise UnwritableDirError(exc.errno, f"{folder}: cannot write here ({reason}); choose another {option}") from None
    return folder


def remove_stale_temporaries(folder) -> int:
    """Delete the `.<name>.*.tmp` files `atomic_write` leaves when its process is killed mid-write.
    Returns how many were removed (0 when the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for tmp in folder.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
