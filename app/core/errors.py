"""The exception types a user can see, each carrying a message a person can act on."""

from __future__ import annotations

from pathlib import Path


class CrownscanError(Exception):
    """Base of user-facing errors: names the file at fault and what is wrong with it.

    ``exit_code`` is what the CLI returns for this kind of failure.
    """

    exit_code = 4

    def __init__(self, path: str | Path | None, message: str) -> None:
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message


class InputError(CrownscanError):
    """A scan, image or workspace file that cannot be used as given."""

    exit_code = 2


class ModelError(CrownscanError):
    """A model file or manifest that is missing, invalid or cannot be loaded."""

    exit_code = 3


class PipelineError(CrownscanError):
    """A failure while running a pipeline on valid input (inference, meshing, writing)."""

    exit_code = 4


class Cancelled(Exception):
    """A run stopped on request; not an error to show, the case stays as it was."""
