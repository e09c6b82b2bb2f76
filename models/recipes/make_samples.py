"""Write the sample workspace: resources/samples/case_001..003 with a synthetic scan each.

    python -m models.recipes.make_samples

Each case folder gets ``scan.ply`` (binary PLY, millimetres, a cropped synthetic context:
preparation, neighbours, antagonist; molar, premolar and incisor cases, placed off the origin as
a real scan is) and, when the segmentation recipes are present, model-scan images
``image_1.jpg``.. from ``models.recipes.synth_images.render_sample_images``.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from app.core.fileio import atomic_write_bytes
from models.recipes.synth_cases import make_case

REPO = Path(__file__).resolve().parents[2]
# (folder, mesh seed, tooth type, image seed): mesh seeds lie outside the crown recipe's
# training (0..) and held-out (1000000..) ranges; image seeds are the small case seeds the
# segmentation recipe keeps for the sample workspace (picked so the workspace stays <= 15 MB).
SAMPLES = (
    ("case_001", 3_000_001, "molar", 1),
    ("case_002", 3_000_002, "premolar", 4),
    ("case_003", 3_000_003, "incisor", 7),
)


def write_samples(out: Path, images: int = 2) -> list[Path]:
    """Write every sample case under ``out``; return the files written."""
    written = []
    has_images = importlib.util.find_spec("models.recipes.synth_images") is not None
    for name, seed, kind, image_seed in SAMPLES:
        case = make_case(seed, tooth_type=kind, context_spacing=0.3, offset_range=35.0)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        scan = folder / "scan.ply"
        atomic_write_bytes(scan, case.context.export(file_type="ply", encoding="binary"))
        scan.chmod(0o644)
        written.append(scan)
        if has_images and images > 0:
            from models.recipes.synth_images import render_sample_images

            written += render_sample_images(image_seed, folder, images)
        print(
            f"{name}: {kind}, {len(case.context.faces)} faces, prep at {case.prep_center.round(1)}"
        )
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "resources" / "samples")
    ap.add_argument("--images", type=int, default=2, help="model-scan images per case")
    args = ap.parse_args(argv)
    files = write_samples(args.out, args.images)
    total = sum(f.stat().st_size for f in files)
    print(f"{len(files)} files, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
