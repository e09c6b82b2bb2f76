"""Where bundled models, the sample workspace and per-user caches live."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def install_root() -> Path:
    """The folder holding ``models/`` and ``resources/``: the checkout, or a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle)
    return Path(__file__).resolve().parents[2]


def bundled_models_dir() -> Path:
    return install_root() / "models"


def sample_workspace_dir() -> Path:
    return install_root() / "resources" / "samples"


def user_cache_dir() -> Path:
    """Per-user cache (TensorRT engines, split crown models), created on demand by the caller."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "Crownscan" / "cache"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "crownscan"


def cache_folder(*parts: str) -> Path:
    """A folder inside the user cache, created if missing."""
    folder = user_cache_dir().joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
