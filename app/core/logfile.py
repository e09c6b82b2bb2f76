"""The application's log: one rotating ``crownscan.log`` in the user log folder.

Support asks for this file first, so it holds what a technician cannot see in the window:
unhandled exceptions with their traceback, which GPU libraries were missing, worker failures.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from app.core.paths import user_log_dir

LOG_NAME = "crownscan.log"
MAX_BYTES = 2_000_000
BACKUPS = 5
_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"


class _CrownscanFileHandler(logging.handlers.RotatingFileHandler):
    """Marks the handler this module installed, so a second setup replaces rather than adds."""


def setup_logging(folder: Path | None = None, level: int = logging.INFO) -> Path | None:
    """Send the root logger to ``<folder>/crownscan.log`` (default: the user log folder),
    rotated at 2 MB with 5 old files kept; returns the file, or None when the folder cannot
    be written (the app then logs to stderr only)."""
    path = (folder if folder is not None else user_log_dir()) / LOG_NAME
    root = logging.getLogger()
    stop_logging()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _CrownscanFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        )
    except OSError as exc:
        logging.getLogger("crownscan").warning("cannot write the log file %s: %s", path, exc)
        return None
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(level)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    logging.captureWarnings(True)
    return path


def stop_logging() -> None:
    """Close and remove the handler :func:`setup_logging` installed, if any."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _CrownscanFileHandler)]:
        root.removeHandler(handler)
        handler.close()


def current_log_file() -> Path | None:
    """The file :func:`setup_logging` writes to, if it was set up."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _CrownscanFileHandler):
            return Path(handler.baseFilename)
    return None
