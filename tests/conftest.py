"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DENTAL_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "dental-samples"


@pytest.fixture(scope="session")
def dental_samples() -> Path:
    """The real dental meshes beside the project (test data only, never copied in)."""
    if not DENTAL_SAMPLES.is_dir():
        reason = "../shared/dental-samples is not beside the checkout (internal test data)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return DENTAL_SAMPLES
