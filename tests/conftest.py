"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

DENTAL_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "dental-samples"


@pytest.fixture
def dental_samples() -> Path:
    """The real dental meshes beside the project (test data only, never copied in)."""
    if not DENTAL_SAMPLES.is_dir():
        pytest.skip("dental-samples folder not present")
    return DENTAL_SAMPLES
