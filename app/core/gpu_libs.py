"""The NVIDIA libraries behind ONNX Runtime's CUDA and TensorRT providers: loaded up front from
the bundle or the NVIDIA pip wheels, and named when one is missing.

ONNX Runtime drops a provider whose libraries do not load and only logs why. A technician needs
the library's name ("libcublasLt.so.13 not found"), not "drivers or libraries missing".
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger("crownscan.gpu")

PROVIDER_LIBRARY = {
    "cuda": "onnxruntime_providers_cuda",
    "tensorrt": "onnxruntime_providers_tensorrt",
}
DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
_NOT_FOUND = re.compile(r"^(?P<lib>[^\s:]+): cannot open shared object file")


@functools.cache
def preload_gpu_libraries() -> list[str]:
    """Load CUDA and cuDNN before the first GPU session: from the bundle's own folder when frozen
    (where ``packaging/crownscan.spec`` puts the NVIDIA wheels' libraries), else from the NVIDIA
    pip wheels of this environment, then from the system. Returns what ONNX Runtime printed
    about libraries it could not load (also logged)."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return []
    bundle = getattr(sys, "_MEIPASS", None)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload(directory=bundle if bundle else "")
    except Exception as exc:  # preload is best effort; the session reports what failed
        log.warning("preloading the NVIDIA libraries failed: %s", exc)
    lines = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
    for line in lines:
        log.info("preload: %s", line)
    return lines


def _provider_library_path(provider: str) -> Path | None:
    import onnxruntime as ort

    stem = PROVIDER_LIBRARY.get(provider)
    if stem is None:
        return None
    name = f"{stem}.dll" if sys.platform == "win32" else f"lib{stem}.so"
    path = Path(ort.__file__).parent / "capi" / name
    return path if path.is_file() else None


def _windows_missing() -> str | None:
    """On Windows the loader does not say which dependency is missing: try the libraries ONNX
    Runtime itself preloads, in its order."""
    import onnxruntime as ort

    listing = getattr(ort, "_get_nvidia_dll_paths", None)
    if listing is None:
        return None
    for parts in listing(True, True, True):
        try:
            ctypes.WinDLL(parts[-1])  # type: ignore[attr-defined]
        except OSError:
            return parts[-1]
    return None


def missing_gpu_library(provider: str) -> str | None:
    """Why ``provider``'s libraries do not load, naming the library, or None when they load
    (or the provider needs no NVIDIA library)."""
    library = _provider_library_path(provider)
    if library is None:
        return None
    preload_gpu_libraries()
    try:
        ctypes.CDLL(DRIVER_LIBRARY)
    except OSError:
        return f"{DRIVER_LIBRARY} not found (no NVIDIA driver installed)"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        found = _NOT_FOUND.match(str(exc))
        if found:
            return f"{found['lib']} not found"
        missing = _windows_missing() if sys.platform == "win32" else None
        if missing:
            return f"{missing} not found"
        return f"{library.name} does not load: {exc}"
    return None
