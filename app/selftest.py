"""``crownscan --selftest [--out DIR]``: prove that an installed copy works, end to end.

Loads both bundled demo models, runs a crown and a segmentation on a copy of a sample case,
opens the window on that copy and writes a screenshot, and checks every output. Prints one line
per step (``ok`` or ``FAIL`` with the reason) and writes them to ``DIR/selftest.txt`` as well (a
windowed Windows executable has no console); exits 0 when every step passed, 1 otherwise.
Nothing is written into the installation.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from app import __version__

MIN_SCREENSHOT_COLOURS = 64


class SelftestFailure(Exception):
    """A step's check did not hold; the message says what."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SelftestFailure(message)


def _models() -> tuple[object, object, str]:
    from app.core.manifest import scan_models
    from app.core.paths import bundled_models_dir

    folder = bundled_models_dir()
    listing = scan_models(folder)
    _check(not listing.errors, "; ".join(str(e) for e in listing.errors))
    crown = [m for m in listing.models if m.kind == "crown"]
    seg = [m for m in listing.models if m.kind == "segmentation"]
    _check(bool(crown) and bool(seg), f"{folder}: needs a crown and a segmentation model")
    return crown[0], seg[0], f"{crown[0].id}, {seg[0].id} from {folder}"


def _sample_case(workspace: Path) -> tuple[Path, Path, str]:
    from app.core.paths import sample_workspace_dir
    from app.core.workspace import discover_cases

    src = sample_workspace_dir()
    cases = [c for c in discover_cases(src) if c.scan is not None and c.images]
    _check(bool(cases), f"{src}: no sample case with a scan and an image")
    case = cases[0]
    shutil.copytree(case.folder, workspace / case.name, ignore=shutil.ignore_patterns("output"))
    copy = workspace / case.name
    return copy / case.scan.name, copy / case.images[0].name, case.name


def _provider_text(pool) -> str:
    used = sorted({p for s in pool.loaded() for p in s.providers[:1]})
    notes = sorted({n for s in pool.loaded() for n in s.notes})
    return f"on {', '.join(used)}" + (f" ({'; '.join(notes)})" if notes else "")


def run_selftest(out: Path, resolution: int | None = None) -> list[tuple[str, bool, str]]:
    """Run every step, each timed; a failed step is recorded and the later ones still run where
    they can. Returns ``(step, passed, detail)`` rows."""
    from app.core.runtime import RuntimeConfig, SessionPool

    rows: list[tuple[str, bool, str]] = []
    state: dict[str, object] = {}
    pool = SessionPool(RuntimeConfig())
    workspace = out / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)

    def step(name: str, fn: Callable[[], str]) -> None:
        t0 = time.perf_counter()
        try:
            detail = fn()
            rows.append((name, True, f"{detail} [{time.perf_counter() - t0:.1f} s]"))
        except Exception as exc:  # every failure is a reason on the report, never a crash
            rows.append((name, False, f"{type(exc).__name__}: {exc}"))

    def models() -> str:
        state["crown_model"], state["seg_model"], text = _models()
        return text

    def case() -> str:
        state["scan"], state["image"], state["case"] = _sample_case(workspace)
        return f"{state['case']} copied to {workspace}"

    def crown() -> str:
        from app.core.crown.pipeline import run_crown

        target = out / "crown.stl"
        result = run_crown(state["scan"], target, state["crown_model"], pool, resolution=resolution)
        _check(target.is_file() and target.stat().st_size > 84, f"{target}: not written")
        _check(len(result.mesh.faces) > 100, f"{target}: only {len(result.mesh.faces)} faces")
        _check(bool(result.watertight), f"{target}: crown is not closed")
        return f"{len(result.mesh.faces)} triangles, closed, {_provider_text(pool)}"

    def segmentation() -> str:
        from PIL import Image

        from app.core.segment.pipeline import run_segment

        target = out / "mask.png"
        run_segment(state["image"], state["seg_model"], pool, mask_path=target)
        labels = np.asarray(Image.open(target))
        classes = np.unique(labels)
        _check(len(classes) >= 2, f"{target}: only class(es) {classes.tolist()} found")
        return f"classes {classes.tolist()}, {_provider_text(pool)}"

    def window() -> str:
        from PIL import Image

        from app.ui.launch import main as gui_main

        shot = out / "window.png"
        code = gui_main(
            [
                "--workspace", str(workspace), "--case", str(state["case"]),
                "--settings", str(out / "settings.ini"), "--size", "1280x800",
                "--screenshot", str(shot), "--quit",
            ]
        )  # fmt: skip
        _check(code == 0, f"the window exited with {code}")
        _check(shot.is_file(), f"{shot}: no screenshot written")
        image = np.asarray(Image.open(shot).convert("RGB"))
        colours = len(np.unique(image.reshape(-1, 3), axis=0))
        _check(
            colours >= MIN_SCREENSHOT_COLOURS,
            f"{shot}: {colours} colours, the window did not render",
        )
        return f"{image.shape[1]}x{image.shape[0]} screenshot, {colours} colours, {shot}"

    step("models", models)
    step("sample case", case)
    if "case" in state and "crown_model" in state:
        step("crown", crown)
        step("segmentation", segmentation)
        step("window", window)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crownscan --selftest", description=__doc__)
    parser.add_argument("--out", type=Path, help="folder for the outputs (default: a new temp)")
    parser.add_argument("--resolution", type=int, help="crown generation resolution")
    args = parser.parse_args(list(argv) if argv is not None else None)
    out = args.out or Path(tempfile.mkdtemp(prefix="crownscan-selftest-"))
    out.mkdir(parents=True, exist_ok=True)
    from app.core.paths import install_root

    lines = [f"crownscan {__version__} selftest, installation {install_root()}"]
    rows = run_selftest(out.resolve(), args.resolution)
    lines += [f"{'ok  ' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in rows]
    passed = len(rows) == 5 and all(ok for _, ok, _ in rows)
    lines.append("selftest passed" if passed else "selftest FAILED")
    (out / "selftest.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if sys.stdout is not None:
        print("\n".join(lines), flush=True)
    return 0 if passed else 1
