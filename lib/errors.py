"""The root of the errors a user can act on, and the one helper that names a file on a full disk.

Each layer has its own base under `UserError`: `lib.config.ConfigError` (recipes, model args),
`datasets.errors.DataError` (raw and preprocessed files), `lib.engine.checkpoint.CheckpointError`
(checkpoints), `DiskFullError` (writes). Their message is one line naming the file or key and the
fault; main.py prints it as `error: <message>` and exits 2, without a traceback. Anything else is a
bug and keeps its traceback.
"""
import errno
import re
from contextlib import contextmanager

# numpy's tofile / np.save into an open file reports a short write without an errno
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


class UserError(Exception):
    """Bad input or environment the user can fix; str(exc) is one line naming the file or key."""


class DiskFullError(UserError, OSError):
    """A write failed because the disk (or quota) is full."""

    def __str__(self):
        return self.strerror  # without OSError's "[Errno 28]" prefix


class UnwritableDirError(UserError, OSError):
    """An output folder cannot be created or written (read-only file system, a file in its place,
    no permission)."""

    def __str__(self):
        return self.strerror


def disk_full_cause(exc: BaseException):
    """The strerror-like reason when `exc` is a write failing on a full disk, else None. Besides an
    OSError ENOSPC / EDQUOT this recognises what libraries turn it into: torch.save's zip writer
    raises RuntimeError ("unexpected pos ...") with the OSError as its context, and numpy writing
    into an open file raises OSError("N requested and M written") with no errno."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return exc.strerror
            if exc.errno is None and _SHORT_WRITE.match(str(exc)):
                return f"short write: {exc}"
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def naming_disk_full(path):
    """Turn a write failing on a full disk inside the block (see `disk_full_cause`) into
    DiskFullError naming `path` (the OSError of a failed write names no file)."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as exc:
        reason = disk_full_cause(exc)
        if reason is not None:
            raise DiskFullError(errno.ENOSPC, f"no space left writing {path} ({reason})") from None
        raise
