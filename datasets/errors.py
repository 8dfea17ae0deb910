"""Errors raised by the data pipeline; each message is one line naming the file and the fault."""
from lib.config.errors import ConfigError


class DataFormatError(ValueError):
    """A raw or preprocessed file is missing, malformed or inconsistent."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # survive the trip back from a worker process
        return type(self), (self.path, self.problem)


class DatasetRootError(FileNotFoundError):
    """The preprocessed data root does not exist (the message names the command that creates it)."""


class UnknownDatasetError(ConfigError):
    """`data.dataset` (or a preprocess command) names no registered dataset; the message suggests one."""
