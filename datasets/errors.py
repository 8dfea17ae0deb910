"""Errors raised by the data pipeline; each message is one line naming the file and the fault."""
from lib.config.errors import ConfigError
from lib.errors import UserError


class DataError(UserError):
    """The base of the data pipeline's errors (main.py prints them as one line)."""


class DataFormatError(DataError, ValueError):
    """A raw or preprocessed file is missing, malformed or inconsistent.

    `problem` may be left out: a DataLoader worker's error is re-raised in the main process with
    the whole message (and the worker's traceback) as the only argument."""

    def __init__(self, path, problem: str | None = None):
        self.path = str(path)
        self.problem = problem
        super().__init__(self.path if problem is None else f"{self.path}: {problem}")

    def __reduce__(self):  # survive the trip back from a worker process
        return type(self), (self.path, self.problem)


class MissingPackageError(DataError, ImportError):
    """An optional package needed to read a file type is not installed (the message says what to install)."""


class DatasetRootError(DataError, FileNotFoundError):
    """The preprocessed data root does not exist (the message names the command that creates it)."""


class UnknownDatasetError(ConfigError):
    """`data.dataset` (or a preprocess command) names no registered dataset; the message suggests one."""
