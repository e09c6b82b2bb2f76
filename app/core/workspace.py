"""Workspaces and their cases: discovery, the files of a case, its status and inputs' hash.

A workspace is a folder of case folders. A case folder holds one context scan mesh (the first
file by name with a mesh suffix) and model-scan images at its top level; everything Crownscan
writes goes to ``<case>/output/`` and inputs are never touched.

Qt-free: the window, the CLI and tests use the same functions.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path

from app.core.crown.meshio import MESH_SUFFIXES
from app.core.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
OUTPUT_DIR = "output"
CROWN_NAME = "crown.stl"
RUN_INFO_NAME = "run.json"


class CaseStatus(enum.StrEnum):
    """What a technician sees next to each case."""

    NEW = "new"
    RUNNING = "running"
    GENERATED = "generated"
    APPROVED = "approved"
    REJECTED = "rejected"
    NEEDS_REWORK = "needs rework"
    ERROR = "error"


@dataclass(frozen=True)
class Case:
    """One case folder: its context scan, its model-scan images, and where outputs go.

    ``problem`` says why the case cannot run (no scan found), or is None.
    """

    name: str
    folder: Path
    scan: Path | None
    images: tuple[Path, ...]
    problem: str | None = None

    @property
    def output_dir(self) -> Path:
        return self.folder / OUTPUT_DIR

    @property
    def inputs(self) -> tuple[Path, ...]:
        return ((self.scan,) if self.scan is not None else ()) + self.images

    @property
    def crown_path(self) -> Path:
        return self.output_dir / CROWN_NAME

    def mask_path(self, image: Path) -> Path:
        return self.output_dir / f"{Path(image).stem}_mask.png"

    def overlay_path(self, image: Path) -> Path:
        return self.output_dir / f"{Path(image).stem}_overlay.png"

    @property
    def run_info_path(self) -> Path:
        return self.output_dir / RUN_INFO_NAME

    def expected_outputs(self) -> list[Path]:
        return [self.crown_path] + [self.mask_path(i) for i in self.images]

    def outputs_present(self) -> bool:
        """True when every output a full run writes exists (crown STL, one mask per image)."""
        if self.scan is None:
            return False
        return all(p.is_file() for p in self.expected_outputs())


def _case_from_folder(folder: Path) -> Case:
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name.lower())
    meshes = [p for p in files if p.suffix.lower() in MESH_SUFFIXES and not p.name.startswith(".")]
    images = tuple(
        p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    problem = None
    if not meshes:
        problem = f"no scan mesh ({', '.join(MESH_SUFFIXES)}) in the case folder"
    return Case(folder.name, folder, meshes[0] if meshes else None, images, problem)


def discover_cases(workspace: str | Path) -> list[Case]:
    """The case folders of ``workspace``, sorted by name.

    A sub-folder counts as a case when it holds a mesh or an image at its top level; one with
    images but no mesh is listed with ``problem`` set so the technician sees why it cannot run.
    Hidden folders and ``output`` folders are skipped.
    """
    root = Path(workspace)
    if not root.is_dir():
        raise InputError(root, "workspace folder does not exist")
    cases = []
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name.lower())
    except OSError as exc:
        raise InputError(root, f"cannot list workspace: {exc.strerror or exc}") from exc
    for sub in entries:
        if not sub.is_dir() or sub.name.startswith(".") or sub.name == OUTPUT_DIR:
            continue
        try:
            case = _case_from_folder(sub)
        except OSError:
            continue
        if case.scan is not None or case.images:
            cases.append(case)
    return cases


def input_hash(case: Case) -> str:
    """sha256 over the case's input files (name and bytes of each, in order).

    Written into ``run.json`` by every run and stored with every decision, so a result and a
    record can be matched to exactly the inputs they were made from.
    """
    h = hashlib.sha256()
    for path in case.inputs:
        try:
            with open(path, "rb") as f:
                h.update(path.name.encode() + b"\0")
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise InputError(path, f"cannot read input: {exc.strerror or exc}") from exc
        h.update(b"\0")
    return h.hexdigest()


def utc_now() -> str:
    """The time stamp of ``run.json`` and of QA records (UTC, ISO 8601, microseconds): one
    format, so a run's time and a decision's time compare as strings."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


PENDING = (CaseStatus.NEW, CaseStatus.GENERATED)


def is_pending(status: CaseStatus) -> bool:
    """A case still waiting for review: not yet generated, or generated but not yet judged."""
    return status in PENDING


__all__ = [
    "Case",
    "CaseStatus",
    "discover_cases",
    "input_hash",
    "is_pending",
    "utc_now",
]
