"""The headless front end over ``app.core``.

Errors print one line, ``error: <file>: <what>``, on stderr and exit with 2 (bad input),
3 (model problem) or 4 (runtime failure); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app import __version__
from app.core.errors import CrownscanError, InputError
from app.core.paths import bundled_models_dir
from app.core.runtime import DEFAULT_PREFERENCE, PROVIDER_NAMES, RuntimeConfig, SessionPool


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=Path, default=None, help="models folder (default: bundled)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--providers",
        default=",".join(DEFAULT_PREFERENCE),
        help="provider preference, best first (tensorrt,cuda,cpu)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = automatic)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crownscan",
        description="Crown generation and model-scan segmentation, headless.",
        epilog="With no verb, crownscan opens the window: crownscan [--workspace DIR] "
        "[--case NAME] [--run] [--screenshot PNG] [--quit] [--models DIR] [--resolution N] "
        "[--settings INI] [--size WxH] (crownscan --workspace . --help lists them).",
    )
    parser.add_argument("--version", action="version", version=f"crownscan {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("models", help="list the models in a models folder")
    _common(p)

    p = sub.add_parser("crown", help="generate a crown mesh from a scan")
    p.add_argument("mesh", type=Path, help="scan around the preparation (STL/PLY/OBJ/OFF/VTP, mm)")
    p.add_argument("-o", "--output", type=Path, required=True, help="crown STL to write")
    p.add_argument("--model", default=None, help="crown manifest path or model id")
    p.add_argument("--resolution", type=int, default=None, help="generation grid resolution")
    p.add_argument(
        "--int8-decoder",
        action="store_true",
        help="run an int8 copy of the decoder's dense layers (faster, not exact)",
    )
    p.add_argument(
        "--center",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="frame centre in mm (default: the manifest's, or found with --auto-frame)",
    )
    p.add_argument(
        "--occlusal",
        type=float,
        nargs=3,
        metavar=("DX", "DY", "DZ"),
        default=None,
        help="occlusal direction in the scan (towards the antagonist)",
    )
    p.add_argument(
        "--mesial",
        type=float,
        nargs=3,
        metavar=("DX", "DY", "DZ"),
        default=None,
        help="mesio-distal direction in the scan (along the arch)",
    )
    p.add_argument(
        "--pick",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="a point on the preparation: propose centre and directions from it",
    )
    p.add_argument(
        "--auto-frame",
        action="store_true",
        help="find what is not given: the preparation, or the directions at --center",
    )
    _common(p)
    _runtime(p)

    p = sub.add_parser("segment", help="segment a model-scan image")
    p.add_argument("image", type=Path, help="model-scan image (PNG/JPEG/BMP/TIFF)")
    p.add_argument("-o", "--output", type=Path, required=True, help="label mask PNG (palette)")
    p.add_argument("--overlay", type=Path, default=None, help="colour overlay PNG to write")
    p.add_argument("--model", default=None, help="segmentation manifest path or model id")
    p.add_argument("--roi", choices=("auto", "on", "off"), default="auto", help="crop path")
    _common(p)
    _runtime(p)

    p = sub.add_parser("bench", help="time the crown or segmentation paths on this machine")
    p.add_argument("pipeline", choices=("crown", "segment"), help="which pipeline to time")
    p.add_argument("--resolution", type=int, default=256, help="crown generation resolution")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = automatic)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _pool(args: argparse.Namespace) -> SessionPool:
    prefs = tuple(s.strip().lower() for s in args.providers.split(",") if s.strip())
    bad = [s for s in prefs if s not in PROVIDER_NAMES]
    if bad or not prefs:
        raise InputError(
            None, f"--providers takes {','.join(PROVIDER_NAMES)}; got {args.providers}"
        )
    return SessionPool(RuntimeConfig(preference=prefs, intra_op_threads=args.threads))


def _models_dir(args: argparse.Namespace) -> Path:
    return args.models if args.models is not None else bundled_models_dir()


def cmd_models(args: argparse.Namespace) -> int:
    from app.core.manifest import scan_models

    listing = scan_models(_models_dir(args))
    rows = [
        {
            "id": m.id,
            "kind": m.kind,
            "name": m.name,
            "version": m.version,
            "manifest": str(m.manifest_path),
            "onnx": [str(f) for f in m.onnx_files],
        }
        for m in listing.models
    ]
    errors = [str(e) for e in listing.errors]
    if args.json:
        print(json.dumps({"models": rows, "errors": errors}, indent=2))
    else:
        for r in rows:
            print(f"{r['id']:<24} {r['kind']:<13} v{r['version']:<6} {r['name']}")
        for e in errors:
            print(f"warning: {e}", file=sys.stderr)
    return 0


def _vec(values: list[float] | None) -> tuple[float, float, float] | None:
    return None if values is None else (values[0], values[1], values[2])


def cmd_crown(args: argparse.Namespace) -> int:
    pool = _pool(args)
    from app.core.crown.frame import CaseFrame, FrameRequest
    from app.core.crown.pipeline import run_crown
    from app.core.manifest import find_model

    if args.pick is not None and args.center is not None:
        raise InputError(None, "give either --pick or --center, not both")
    model = find_model(args.model, "crown", _models_dir(args))
    if args.int8_decoder:
        generation = dataclasses.replace(model.generation, decoder_int8=True)
        model = dataclasses.replace(model, generation=generation)
    try:
        request = FrameRequest(
            center=_vec(args.center),
            occlusal=_vec(args.occlusal),
            mesial=_vec(args.mesial),
            pick=_vec(args.pick),
            auto=args.auto_frame,
        )
        if request.occlusal is not None or request.mesial is not None:
            CaseFrame((0.0, 0.0, 0.0), request.occlusal, request.mesial)
    except ValueError as exc:
        raise InputError(None, f"frame options: {exc}") from exc
    result = run_crown(
        args.mesh, args.output, model, pool, resolution=args.resolution, frame_request=request
    )
    out: dict[str, Any] = {
        "input": str(args.mesh),
        "output": str(args.output),
        "model": model.id,
        "vertices": int(len(result.mesh.vertices)),
        "faces": int(len(result.mesh.faces)),
        "watertight": bool(result.watertight),
        **result.report.as_dict(),
    }
    _emit(args, out, f"crown written to {args.output} ({out['faces']} triangles)")
    for warning in result.warnings:
        print(f"warning: {args.output}: {warning}", file=sys.stderr)
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    pool = _pool(args)
    from app.core.manifest import find_model
    from app.core.segment.pipeline import run_segment

    model = find_model(args.model, "segmentation", _models_dir(args))
    roi = {"auto": None, "on": True, "off": False}[args.roi]
    result = run_segment(
        args.image, model, pool, mask_path=args.output, overlay_path=args.overlay, roi=roi
    )
    out: dict[str, Any] = {
        "input": str(args.image),
        "output": str(args.output),
        "overlay": None if args.overlay is None else str(args.overlay),
        "model": model.id,
        **result.report.as_dict(),
    }
    _emit(args, out, f"mask written to {args.output}")
    return 0


def _emit(args: argparse.Namespace, payload: dict[str, Any], line: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(line)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.pipeline == "crown":
        from app.core.crown.bench import crown_bench, table

        if args.resolution < 9:
            raise InputError(None, f"--resolution must be at least 9, got {args.resolution}")
        figures = crown_bench(args.resolution, args.threads)
    else:
        try:
            from app.core.segment import bench as segment
        except ImportError as exc:
            raise CrownscanError(
                None, f"the segmentation bench is not part of this build ({exc})"
            ) from exc
        figures = segment.segment_bench(threads=args.threads)
        table = getattr(segment, "table", lambda f: json.dumps(f, indent=2))
    if args.json:
        print(json.dumps({args.pipeline: figures}, indent=2))
    else:
        print(table(figures))
    return 0


COMMANDS = {"models": cmd_models, "crown": cmd_crown, "segment": cmd_segment, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a CLI verb, or open the window when no verb is given (``crownscan [--workspace D]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help", "--version"):
        from app.ui.launch import main as gui_main

        return gui_main(argv)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except CrownscanError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
            file=sys.stderr,
        )
        return 4


if __name__ == "__main__":
    sys.exit(main())
