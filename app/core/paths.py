"""Where bundled models, the sample workspace and the per-user folders live.

The per-user folders follow each platform's convention through platformdirs, under one
application folder named ``Crownscan`` (no organisation folder above it):

============  ===================================  ========================================
what          Windows                              Linux
============  ===================================  ========================================
data          ``%LOCALAPPDATA%\\Crownscan``          ``~/.local/share/Crownscan``
logs          ``%LOCALAPPDATA%\\Crownscan\\Logs``     ``~/.local/state/Crownscan/log``
cache         ``%LOCALAPPDATA%\\Crownscan\\Cache``    ``~/.cache/Crownscan``
============  ===================================  ========================================
"""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs

APP_NAME = "Crownscan"


def install_root() -> Path:
    """The folder holding ``models/`` and ``resources/``: the checkout, an installed package's
    data, or a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle)
    wheel_data = Path(__file__).resolve().parents[1] / "data"
    if wheel_data.is_dir():
        return wheel_data
    return Path(__file__).resolve().parents[2]


def bundled_models_dir() -> Path:
    return install_root() / "models"


def sample_workspace_dir() -> Path:
    return install_root() / "resources" / "samples"


def user_data_dir() -> Path:
    """Per-user data (the writable sample workspace copy); created on demand by the caller."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def legacy_user_data_dir() -> Path:
    """Where releases up to 0.1 kept user data: the application folder inside an organisation
    folder of the same name (``Crownscan/Crownscan``)."""
    return user_data_dir() / APP_NAME


def user_log_dir() -> Path:
    """Per-user log folder (the rotating ``crownscan.log``)."""
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def user_cache_dir() -> Path:
    """Per-user cache (TensorRT engines, split crown models), created on demand by the caller."""
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def cache_folder(*parts: str) -> Path:
    """A folder inside the user cache, created if missing."""
    folder = user_cache_dir().joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
