"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DENTAL_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "dental-samples"
MISSING_SAMPLES = "../shared/dental-samples is not beside the checkout (internal test data)"


def pytest_configure(config: pytest.Config) -> None:
    """In CI (``CI`` set) the real dental samples are required: stop before any test runs."""
    if os.environ.get("CI") and not DENTAL_SAMPLES.is_dir():
        raise pytest.UsageError(f"{MISSING_SAMPLES} ({DENTAL_SAMPLES}); CI must have it")


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep what runs write to the user cache (split crown models), the log and the user data
    out of the real ones."""
    cache = tmp_path_factory.mktemp("user-cache")
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "LOCALAPPDATA", "XDG_STATE_HOME")}
    os.environ["XDG_CACHE_HOME"] = os.environ["LOCALAPPDATA"] = str(cache)
    os.environ["XDG_STATE_HOME"] = str(cache / "state")
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def dental_samples() -> Path:
    """The real dental meshes beside the project (test data only, never copied in)."""
    if not DENTAL_SAMPLES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING_SAMPLES}; CI must have it")
        pytest.skip(MISSING_SAMPLES)
    return DENTAL_SAMPLES
