"""Output writing that never replaces an input, never leaves a half-written file under its final
name, and names the file and the cause when the file system refuses.

Every output goes to a temp file beside its target, named ``.<name>.<host>-<pid>-<random>
.crownscan-tmp``, created with mode 0666 less the user's umask (colleagues on a shared
workspace can read it, as with any other file the user makes), and is renamed over the target
only once written. A process killed mid-write leaves its temp file; :func:`clean_stale_temps`
removes those of dead processes the next time the folder is written to.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from app.core.errors import InputError, PipelineError

TEMP_SUFFIX = ".crownscan-tmp"
STALE_AFTER_S = 24 * 3600
"""A temp file of another machine (or of a legacy name) is stale after this long untouched."""

_CAUSES = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a folder, not a file",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EIO: "input/output error (disk or network share failing)",
}
_HOST = format(zlib.crc32(socket.gethostname().encode()), "08x")


def os_error_cause(exc: OSError) -> str:
    """What went wrong, in words a technician can act on (the errno's meaning when unknown)."""
    cause = _CAUSES.get(exc.errno or -1)
    if cause is not None:
        return cause
    return exc.strerror or str(exc) or type(exc).__name__


def write_error(path: Path, exc: OSError) -> PipelineError:
    """The project's error for a failed write of ``path``: the file and the cause."""
    return PipelineError(path, f"cannot write: {os_error_cause(exc)}")


def check_not_input(output: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output path that is one of the inputs (compared after resolving links)."""
    out = Path(output).resolve()
    for src in inputs:
        if Path(src).resolve() == out:
            raise InputError(output, "output path is the input file; choose another output path")


def check_output_path(output: Path, suffixes: Sequence[str] = ()) -> None:
    """Refuse, before any work is done, an output that is a folder or has a suffix not in
    ``suffixes`` (when given)."""
    output = Path(output)
    if output.is_dir():
        raise InputError(output, "is a folder; give a file path to write")
    if suffixes and output.suffix.lower() not in suffixes:
        raise InputError(
            output, f"unsupported output format '{output.suffix}' (use {', '.join(suffixes)})"
        )


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (never signals it: on Windows
    ``os.kill`` would end it)."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if handle:
            kernel32.CloseHandle(handle)
            return True
        return kernel32.GetLastError() == 5  # access denied: it runs as another user
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _is_stale(name: str, folder: Path) -> bool:
    parts = name[: -len(TEMP_SUFFIX)].rsplit(".", 1)
    owner = parts[-1].split("-") if len(parts) == 2 else []
    if len(owner) == 3 and owner[0] == _HOST and owner[1].isdigit():
        return not _pid_alive(int(owner[1]))
    try:
        return time.time() - (folder / name).stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def clean_stale_temps(folder: Path) -> int:
    """Remove temp files Crownscan left in ``folder`` when a process died mid-write.

    A temp file of this machine is stale when its process is gone; one of another machine
    (a shared workspace) only after :data:`STALE_AFTER_S`. Returns how many were removed;
    a folder that cannot be listed is left alone.
    """
    removed = 0
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(TEMP_SUFFIX)]
    except OSError:
        return 0
    for name in names:
        if _is_stale(name, folder):
            try:
                os.unlink(folder / name)
                removed += 1
            except OSError:
                pass
    return removed


def _temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _new_temp(path: Path) -> Path:
    """Create an empty temp file beside ``path`` honouring the umask (0666 & ~umask)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path.parent)
        tmp = _temp_name(path)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise write_error(path, exc) from exc
    return tmp


def _write_temp(path: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a new temp file for ``path``; remove it again on any failure."""
    tmp = _new_temp(path)
    try:
        write(tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _replace(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` into a temp file beside ``path``, then rename over it.

    A crash mid-write leaves the old file (or none) in place, never a truncated one; an
    ``OSError`` becomes a :class:`PipelineError` naming ``path`` and the cause.
    """
    path = Path(path)
    _replace(_write_temp(path, write), path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def commit_set(items: Sequence[tuple[Path, Callable[[Path], None]]]) -> list[Path]:
    """Write several files as one set: every temp file first, then the renames.

    A failure while writing (a full disk) removes the temp files and leaves every target as
    it was. Targets already there are kept as hard-link backups during the renames, so a
    rename failing part-way puts the earlier ones back: the previous set stays whole. Returns
    the targets in order.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in items:
            temps.append((_write_temp(Path(path), write), Path(path)))
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    backups: list[tuple[Path, Path | None, bool]] = []
    try:
        for tmp, path in temps:
            backups.append((path, _backup(path), path.exists()))
            _replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        for path, backup, existed in reversed(backups):
            _restore(path, backup, existed)
        raise
    for _, backup, _ in backups:
        if backup is not None:
            backup.unlink(missing_ok=True)
    return [path for _, path in temps]


def _backup(path: Path) -> Path | None:
    """A hard link to the current ``path`` under a temp name (None when there is no file, or
    the file system has no hard links)."""
    if not path.is_file():
        return None
    link = _temp_name(path)
    try:
        os.link(path, link)
    except OSError:
        return None
    return link


def _restore(path: Path, backup: Path | None, existed: bool) -> None:
    """Put back what ``path`` held before the set was committed (best effort)."""
    try:
        if backup is not None:
            os.replace(backup, path)
            backup.unlink(missing_ok=True)  # rename between two links of one file does nothing
        elif not existed:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB blocks (keys cached derivatives of a model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
