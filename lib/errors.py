"""The root of the errors a user can act on, and the one helper that names a file on a full disk.

Each layer has its own base under `UserError`: `lib.config.ConfigError` (recipes, model args),
`datasets.errors.DataError` (raw and preprocessed files), `lib.engine.checkpoint.CheckpointError`
(checkpoints), `DiskFullError` (writes). Their message is one line naming the file or key and the
fault; main.py prints it as `error: <message>` and exits 2, without a traceback. Anything else is a
bug and keeps its traceback.
"""
import errno
from contextlib import contextmanager


class UserError(Exception):
    """Bad input or environment the user can fix; str(exc) is one line naming the file or key."""


class DiskFullError(UserError, OSError):
    """A write failed because the disk (or quota) is full."""

    def __str__(self):
        return self.strerror  # without OSError's "[Errno 28]" prefix


@contextmanager
def naming_disk_full(path):
    """Turn an OSError ENOSPC / EDQUOT raised inside the block into DiskFullError naming `path`
    (the OSError of a failed write names no file)."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"no space left writing {path} ({exc.strerror})") from None
        raise
