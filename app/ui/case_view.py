"""What the window shows for one case, built off the GUI thread from files on disk.

Loading reads the scan, an existing crown, the images and their masks through ``app.core``
loaders and turns them into display objects (PolyData, arrays). A file that cannot be read is
reported in ``error`` instead of raising, so a broken case never stops the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.case_run import read_run_info
from app.core.errors import CrownscanError
from app.core.report import CancelToken
from app.core.workspace import Case, input_hash

from .viewer2d import ImageEntry, make_thumb
from .viewer3d import mesh_to_polydata


@dataclass
class CaseView:
    """Display data of one case; ``stamp`` tells whether the files changed since it was built."""

    case: str
    scan: Any = None  # pyvista.PolyData
    crown: Any = None  # pyvista.PolyData
    images: list[ImageEntry] = field(default_factory=list)
    run_info: dict[str, Any] | None = None
    error: str | None = None
    stamp: tuple = ()
    input_hash: str | None = None


def case_stamp(case: Case) -> tuple:
    """Modification times of the case's inputs and outputs (what a cached view depends on)."""
    out = []
    for p in [*case.inputs, *case.expected_outputs()]:
        try:
            out.append((p.name, p.stat().st_mtime_ns))
        except OSError:
            out.append((p.name, None))
    return tuple(out)


def load_case_view(case: Case, cancel: CancelToken | None = None) -> CaseView:
    """Read everything the panels show for ``case`` (runs in a worker)."""
    from app.core.crown.meshio import load_mesh
    from app.core.segment.imageio import load_image, read_label_png

    cancel = cancel or CancelToken()
    view = CaseView(case.name, stamp=case_stamp(case), run_info=read_run_info(case))
    errors: list[str] = []
    if case.problem:
        errors.append(f"{case.folder}: {case.problem}")
    if case.scan is not None:
        try:
            view.scan = mesh_to_polydata(load_mesh(case.scan))
        except CrownscanError as exc:
            errors.append(str(exc))
    cancel.check()
    if case.crown_path.is_file():
        try:
            view.crown = mesh_to_polydata(load_mesh(case.crown_path))
        except CrownscanError as exc:
            errors.append(f"previous output unreadable: {exc}")
    boxes = {}
    if view.run_info:
        for name, info in (view.run_info.get("images") or {}).items():
            box = info.get("roi_box") if isinstance(info, dict) else None
            if isinstance(box, list) and len(box) == 4:
                boxes[name] = tuple(int(v) for v in box)
    for path in case.images:
        cancel.check()
        try:
            rgb = load_image(path)
        except CrownscanError as exc:
            errors.append(str(exc))
            continue
        labels = None
        mask = case.mask_path(path)
        if mask.is_file():
            try:
                labels = read_label_png(mask)
            except CrownscanError as exc:
                errors.append(f"previous output unreadable: {exc}")
            if labels is not None and labels.shape != rgb.shape[:2]:
                errors.append(f"{mask}: mask size {labels.shape} does not match its image")
                labels = None
        view.images.append(
            ImageEntry(Path(path), rgb, labels, boxes.get(Path(path).name), make_thumb(rgb))
        )
    try:
        view.input_hash = input_hash(case)
    except CrownscanError:
        view.input_hash = None
    view.error = "\n".join(errors) or None
    return view


def view_from_result(result: Any, scan_poly: Any, case: Case) -> CaseView:
    """Display data straight from a finished run (no re-reading of what was just written)."""
    images = [
        ImageEntry(
            Path(i.image_path),
            i.result.image,
            i.result.labels,
            i.result.roi_box,
            make_thumb(i.result.image),
        )
        for i in result.images
    ]
    if not images and case.images:
        images = load_case_view(case).images
    if scan_poly is None and case.scan is not None:
        from app.core.crown.meshio import load_mesh

        scan_poly = mesh_to_polydata(load_mesh(case.scan))
    return CaseView(
        case.name,
        scan=scan_poly,
        crown=mesh_to_polydata(result.crown.mesh),
        images=images,
        run_info=read_run_info(case),
        stamp=case_stamp(case),
        input_hash=input_hash(case),
    )
