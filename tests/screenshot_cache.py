"""Screenshot regression checks against small reference PNGs (pyvista's image-cache approach).

A test renders a panel to an RGB array and calls :func:`check_screenshot`; the reference is
``tests/screenshots/<name>.png``. The comparison is VTK's image difference as pyvista wraps it
(:func:`pyvista.compare_images`), which forgives the one-pixel shifts and shading noise of
different software OpenGL builds but not a changed colour, shape or layout.

Regenerate the references after an intended visual change with
``CROWNSCAN_UPDATE_SCREENSHOTS=1 python -m pytest tests/test_screenshots.py`` and review the
new PNGs in the diff. A failing comparison writes the actual picture to
``screenshot-failures/<name>.png`` at the repository root (or ``$CROWNSCAN_SCREENSHOT_FAILURES``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

REFERENCES = Path(__file__).resolve().parent / "screenshots"
FAILURES = Path(__file__).resolve().parents[1] / "screenshot-failures"
UPDATE_ENV = "CROWNSCAN_UPDATE_SCREENSHOTS"
MAX_ERROR = 300.0
"""Largest allowed VTK image-difference error (pyvista's own suite fails above 500)."""


def image_error(reference: np.ndarray, actual: np.ndarray) -> float:
    """VTK's image difference between two RGB pictures of one size (0: the same)."""
    import pyvista as pv

    if reference.shape != actual.shape:
        return float("inf")
    return float(pv.compare_images(np.ascontiguousarray(reference), np.ascontiguousarray(actual)))


def check_screenshot(name: str, actual: np.ndarray) -> float:
    """Compare ``actual`` (H, W, 3 uint8) with the reference ``name``; returns the error.

    With ``$CROWNSCAN_UPDATE_SCREENSHOTS`` set the reference is (re)written instead. A
    missing reference or an error above :data:`MAX_ERROR` fails, saving the actual picture.
    """
    actual = np.ascontiguousarray(np.asarray(actual, dtype=np.uint8)[..., :3])
    ref_path = REFERENCES / f"{name}.png"
    if os.environ.get(UPDATE_ENV):
        REFERENCES.mkdir(exist_ok=True)
        Image.fromarray(actual).save(ref_path, optimize=True)
        return 0.0
    if not ref_path.is_file():
        _save_failure(name, actual)
        raise AssertionError(f"no reference {ref_path.name}; make it with {UPDATE_ENV}=1")
    reference = np.asarray(Image.open(ref_path).convert("RGB"))
    if reference.shape != actual.shape:
        saved = _save_failure(name, actual)
        raise AssertionError(
            f"{name}: picture is {actual.shape[1]}x{actual.shape[0]}, the reference"
            f" {reference.shape[1]}x{reference.shape[0]} (a scaled display?); actual in {saved}"
        )
    error = image_error(reference, actual)
    if error > MAX_ERROR:
        saved = _save_failure(name, actual)
        raise AssertionError(
            f"{name}: the picture changed (error {error:.0f} > {MAX_ERROR:.0f}); actual picture"
            f" in {saved}. If the change is intended, regenerate with {UPDATE_ENV}=1."
        )
    return error


def _save_failure(name: str, actual: np.ndarray) -> Path:
    folder = Path(os.environ.get("CROWNSCAN_SCREENSHOT_FAILURES") or FAILURES)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.fromarray(actual).save(path)
    return path
