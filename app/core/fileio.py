"""Atomic output writing that never replaces an input file."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from app.core.errors import InputError, PipelineError


def check_not_input(output: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output path that is one of the inputs (compared after resolving links)."""
    out = Path(output).resolve()
    for src in inputs:
        if Path(src).resolve() == out:
            raise InputError(output, "output path is the input file; choose another output path")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` into a temp file beside ``path``, then rename over it.

    A crash mid-write leaves the old file (or none) in place, never a truncated one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise PipelineError(path, f"cannot write here: {exc.strerror or exc}") from exc
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB blocks (keys cached derivatives of a model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
