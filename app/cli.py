"""The headless front end over ``app.core``.

Errors print one line, ``error: <file>: <what>``, on stderr and exit with 2 (bad input),
3 (model problem) or 4 (runtime failure); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app import __version__
from app.core.errors import CrownscanError, InputError
from app.core.paths import bundled_models_dir
from app.core.remote import make_pool
from app.core.runtime import DEFAULT_PREFERENCE, PROVIDER_NAMES, RuntimeConfig, SessionPool


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=Path, default=None, help="models folder (default: bundled)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _import_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, default=None, help="manifest (default: beside)")
    p.add_argument("--force", action="store_true", help="replace an existing manifest")
    p.add_argument("--json", action="store_true", help="print the manifest on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--providers",
        default=None,
        help="provider preference, best first (default tensorrt,cuda,cpu); a GPU provider "
        "asked for here that cannot start is a warning naming the missing library",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = automatic)")
    p.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="run the models on a Triton server, grpc://HOST:8001 or http://HOST:8000 "
        "(default: $CROWNSCAN_SERVER, else this machine)",
    )
    p.add_argument("--server-timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument(
        "--server-fallback",
        action="store_true",
        help="run locally when the server cannot run a model (reported as such)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crownscan",
        description="Crown generation and model-scan segmentation, headless.",
        epilog="With no verb, crownscan opens the window: crownscan [--workspace DIR] "
        "[--case NAME] [--run] [--screenshot PNG] [--quit] [--models DIR] [--resolution N] "
        "[--settings INI] [--size WxH] (crownscan --workspace . --help lists them). "
        "crownscan --selftest [--out DIR] checks an installation end to end.",
    )
    parser.add_argument("--version", action="version", version=f"crownscan {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser(
        "models", help="list the usable models (* = default) and the skipped ones, with why"
    )
    p.add_argument("--check", action="store_true", help="compare each ONNX graph with its manifest")
    _common(p)

    p = sub.add_parser("import", help="write a manifest from how a model was trained")
    family = p.add_subparsers(dest="family", required=True)
    q = family.add_parser("mmseg", help="from an MMSegmentation config (0.x or 1.x)")
    q.add_argument("config", type=Path, help="the training config (.py), read without running")
    q.add_argument("onnx", type=Path, help="the exported model")
    _import_common(q)
    q = family.add_parser("ifnet", help="with IF-Net's conventions for one of its variants")
    q.add_argument("onnx", type=Path, help="the exported model")
    q.add_argument(
        "--variant",
        required=True,
        help="ShapeNet128Vox, ShapeNet32Vox, ShapeNet300Points or ShapeNet3000Points",
    )
    _import_common(q)

    p = sub.add_parser("crown", help="generate a crown mesh from a scan")
    p.add_argument("mesh", type=Path, help="scan around the preparation (STL/PLY/OBJ/OFF/VTP, mm)")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="crown to write (.stl, .ply or .obj)"
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the scan's coordinates to get mm (1000 for metres, 0.001 for microns)",
    )
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
    p.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default=None,
        help="int8 runs a copy calibrated on the sample images (default: the manifest's)",
    )
    p.add_argument(
        "--long-side",
        type=int,
        default=None,
        help="run the model with the frame's long side at N pixels (0: full size; "
        "default: the manifest's)",
    )
    p.add_argument("--roi", choices=("auto", "on", "off"), default="auto", help="crop path")
    _common(p)
    _runtime(p)

    p = sub.add_parser("serve-repo", help="write a Triton model repository from a models folder")
    p.add_argument("models_dir", type=Path, help="the models folder the workstations use")
    p.add_argument("out_dir", type=Path, help="new or empty folder for the repository")
    p.add_argument("--cpu", action="store_true", help="instances on the CPU (no GPU on the server)")
    p.add_argument("--no-tensorrt", action="store_true", help="ONNX Runtime's CUDA only")
    p.add_argument("--fp16", action="store_true", help="TensorRT in FP16 (faster, not identical)")
    p.add_argument("--max-batch", type=int, default=8, help="largest dynamic batch (0 = none)")
    p.add_argument("--trt-cache", default="", help="TensorRT engine cache folder on the server")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    p = sub.add_parser("bench", help="time the crown or segmentation paths on this machine")
    p.add_argument("pipeline", choices=("crown", "segment"), help="which pipeline to time")
    p.add_argument("--resolution", type=int, default=256, help="crown generation resolution")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = automatic)")
    p.add_argument(
        "--session-options",
        action="store_true",
        help="segment: also time ONNX Runtime session options (threads, optimisation level)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _pool(args: argparse.Namespace) -> SessionPool:
    given = args.providers if args.providers is not None else ",".join(DEFAULT_PREFERENCE)
    prefs = tuple(s.strip().lower() for s in given.split(",") if s.strip())
    bad = [s for s in prefs if s not in PROVIDER_NAMES]
    if bad or not prefs:
        raise InputError(
            None, f"--providers takes {','.join(PROVIDER_NAMES)}; got {args.providers}"
        )
    from app.core.remote import parse_server, server_from_env

    try:
        kw = {"timeout_s": args.server_timeout, "fallback": args.server_fallback}
        server = parse_server(args.server, **kw) if args.server else server_from_env(**kw)
    except ValueError as exc:
        raise InputError(None, f"--server: {exc}") from exc
    return make_pool(RuntimeConfig(preference=prefs, intra_op_threads=args.threads), server)


def _models_dir(args: argparse.Namespace) -> Path:
    return args.models if args.models is not None else bundled_models_dir()


def cmd_models(args: argparse.Namespace) -> int:
    from app.core.model_choice import check_folder, default_id

    found = check_folder(_models_dir(args))
    defaults = {k: default_id(found.of_kind(k)) for k in ("crown", "segmentation")}
    rows = [
        {
            "id": m.id,
            "kind": m.kind,
            "name": m.name,
            "version": m.version,
            "default": m.id == defaults[m.kind],
            "manifest": str(m.manifest_path),
            "onnx": [str(f) for f in m.onnx_files],
        }
        for m in found.models
    ]
    skipped = [
        {"manifest": str(s.manifest), "kind": s.kind, "reason": s.reason} for s in found.skipped
    ]
    errors = [f"{s['manifest']}: skipped: {s['reason']}" for s in skipped]
    if args.check:
        from app.core.model_lint import lint_model

        for row, spec in zip(rows, found.models, strict=True):
            row["lint"] = lint_model(spec)
    if args.json:
        print(json.dumps({"models": rows, "skipped": skipped, "errors": errors}, indent=2))
    else:
        for r in rows:
            mark = "*" if r["default"] else " "
            print(f"{mark} {r['id']:<24} {r['kind']:<13} v{r['version']:<6} {r['name']}")
            for warning in r.get("lint", []):
                print(f"warning: {r['id']}: {warning}", file=sys.stderr)
        for e in errors:
            print(f"warning: {e}", file=sys.stderr)
    return 3 if args.check and any(r["lint"] for r in rows) else 0


def cmd_import(args: argparse.Namespace) -> int:
    from app.core.model_import import ifnet_manifest, mmseg_manifest, write_manifest

    onnx_path = args.onnx.resolve()
    out = args.output if args.output is not None else onnx_path.with_suffix(".json")
    if out.exists() and not args.force:
        raise InputError(out, "a manifest is already there; give --force to replace it")
    if args.family == "mmseg":
        data = mmseg_manifest(args.config, onnx_path, out.resolve().parent)
        inputs = [args.config, onnx_path]
    else:
        data = ifnet_manifest(onnx_path, args.variant, out.resolve().parent)
        inputs = [onnx_path]
    write_manifest(data, out, inputs)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"manifest written to {out}")
    return 0


def _vec(values: list[float] | None) -> tuple[float, float, float] | None:
    return None if values is None else (values[0], values[1], values[2])


def cmd_crown(args: argparse.Namespace) -> int:
    pool = args.pool = _pool(args)
    from app.core.crown.frame import CaseFrame, FrameRequest
    from app.core.crown.pipeline import run_crown
    from app.core.manifest import find_model

    if args.pick is not None and args.center is not None:
        raise InputError(None, "give either --pick or --center, not both")
    if not (math.isfinite(args.scale) and args.scale > 0):
        raise InputError(None, f"--scale must be a positive number, got {args.scale}")
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
        args.mesh,
        args.output,
        model,
        pool,
        resolution=args.resolution,
        frame_request=request,
        scale=args.scale,
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
    _print_lint(result.report.info)
    return 0


def _print_lint(info: dict[str, Any]) -> None:
    for warning in info.get("model_lint", []):
        print(f"warning: model: {warning}", file=sys.stderr)


def _speed(args: argparse.Namespace, model: Any) -> Any:
    """The manifest's speed options with ``--precision`` / ``--long-side`` applied."""
    from app.core.manifest import Speed

    if args.long_side is not None and args.long_side != 0 and args.long_side < 32:
        raise InputError(None, f"--long-side must be 0 or at least 32, got {args.long_side}")
    long_side = model.speed.long_side if args.long_side is None else (args.long_side or None)
    return Speed(args.precision or model.speed.precision, long_side)


def cmd_segment(args: argparse.Namespace) -> int:
    pool = args.pool = _pool(args)
    from app.core.manifest import find_model
    from app.core.segment.pipeline import run_segment

    model = find_model(args.model, "segmentation", _models_dir(args))
    roi = {"auto": None, "on": True, "off": False}[args.roi]
    speed = _speed(args, model)
    result = run_segment(
        args.image,
        model,
        pool,
        mask_path=args.output,
        overlay_path=args.overlay,
        roi=roi,
        speed=speed,
    )
    out: dict[str, Any] = {
        "input": str(args.image),
        "output": str(args.output),
        "overlay": None if args.overlay is None else str(args.overlay),
        "model": model.id,
        **result.report.as_dict(),
    }
    _emit(args, out, f"mask written to {args.output}")
    _print_lint(result.report.info)
    return 0


def cmd_serve_repo(args: argparse.Namespace) -> int:
    from app.core.triton_repo import RepoOptions, write_repository

    if args.max_batch < 0:
        raise InputError(None, f"--max-batch must be 0 or more, got {args.max_batch}")
    options = RepoOptions(
        gpu=not args.cpu,
        tensorrt=not args.no_tensorrt,
        precision="FP16" if args.fp16 else "FP32",
        max_batch=args.max_batch,
        trt_cache=args.trt_cache,
    )
    written, errors = write_repository(args.models_dir, args.out_dir, options)
    rows = [{"name": m.name, "version": m.version, "source": str(m.source),
             "batching": m.batching, "bytes": m.size} for m in written]  # fmt: skip
    if args.json:
        print(json.dumps({"repository": str(args.out_dir), "models": rows,
                          "errors": [str(e) for e in errors]}, indent=2))  # fmt: skip
    else:
        for r in rows:
            batch = "dynamic batching" if r["batching"] else "no batching"
            print(f"{r['name']:<28} v{r['version']:<4} {r['bytes'] / 2**20:8.1f} MB  {batch}")
        print(f"repository written to {args.out_dir}")
    for e in errors:
        print(f"warning: {e} (not served)", file=sys.stderr)
    return 0


def _emit(args: argparse.Namespace, payload: dict[str, Any], line: str) -> None:
    """Print the report; say which provider ran and, when a GPU provider asked for with
    ``--providers`` did not start, why (never a silent CPU run)."""
    notes = list(dict.fromkeys(n for s in args.pool.loaded() for n in s.notes))
    payload["provider_notes"] = notes
    if args.providers is not None:
        for note in notes:
            if ": could not be initialised" in note:
                print(f"warning: {note}", file=sys.stderr)
    line += f" on {', '.join(payload.get('providers') or ['?'])}"
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(line)


def _reader_gone() -> int:
    """stdout was a pipe whose reader exited (``crownscan models | head -1``): the work is
    done and nobody is left to tell; point stdout at devnull so the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


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
        figures = segment.segment_bench(
            threads=args.threads, with_session_options=args.session_options
        )
        table = getattr(segment, "table", lambda f: json.dumps(f, indent=2))
    if args.json:
        print(json.dumps({args.pipeline: figures}, indent=2))
    else:
        print(table(figures))
    return 0


COMMANDS = {
    "models": cmd_models,
    "import": cmd_import,
    "crown": cmd_crown,
    "segment": cmd_segment,
    "serve-repo": cmd_serve_repo,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a CLI verb, or open the window when no verb is given (``crownscan [--workspace D]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--selftest":
        from app.selftest import main as selftest_main

        return selftest_main(argv[1:])
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help", "--version"):
        from app.ui.launch import main as gui_main

        return gui_main(argv)
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.verb](args)
        sys.stdout.flush()  # a closed pipe shows here, not as a failed flush at exit
        return code
    except CrownscanError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()
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
