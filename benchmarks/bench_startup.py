"""Start-up: seconds from starting the process to the main window being on the screen.

Rows: a bare PySide6 window (the baseline: Python + Qt and nothing else), the app from this
checkout (``python -m app``), and the PyInstaller bundle (``dist/crownscan/crownscan``) when it
has been built. The first start of each is reported as cold (disk caches may be cold), the
median of the others as warm. A window counts as shown when the X server has mapped a window
titled "Crownscan..." (polled with ``xwininfo``), so the bundle is timed the same way as the
source without any probe inside the app. Each started app is then ended.

    xvfb-run -a -s "-screen 0 1600x1000x24 -noreset" python benchmarks/bench_startup.py

``--repeats N`` sets the starts per row (default 6, the first is the cold one).

Needs an X display (``-noreset``: Xvfb otherwise resets between two starts and refuses the
next one for a moment) and ``xwininfo`` (x11-utils).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "dist" / "crownscan" / ("crownscan.exe" if os.name == "nt" else "crownscan")
BARE_QT = (
    "import sys\nfrom PySide6 import QtWidgets\napp = QtWidgets.QApplication(sys.argv)\n"
    "w = QtWidgets.QMainWindow()\nw.setWindowTitle('Crownscan bare Qt')\nw.resize(1500, 920)\n"
    "w.show()\napp.exec()\n"
)


def _xwininfo(*args: str) -> str:
    return subprocess.run(["xwininfo", *args], capture_output=True, text=True).stdout


def _mapped(title: str) -> bool:
    """A window titled ``title...`` exists and is viewable (created is not enough: a native
    child widget makes Qt create the window before it is shown)."""
    ids = [
        line.split()[0]
        for line in _xwininfo("-root", "-tree").splitlines()
        if f'"{title}' in line and line.strip().startswith("0x")
    ]
    return any("IsViewable" in _xwininfo("-id", wid) for wid in ids)


def time_to_window(cmd: list[str], env: dict, timeout_s: float = 120.0) -> float:
    """Seconds from spawning ``cmd`` until a window whose title starts with Crownscan is
    mapped; the process is ended afterwards."""
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        while time.perf_counter() - t0 < timeout_s:
            if _mapped("Crownscan"):
                return time.perf_counter() - t0
            if proc.poll() is not None:
                err.seek(0)
                tail = err.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}: {tail}")
            time.sleep(0.02)
        raise RuntimeError(f"{cmd[0]}: no window within {timeout_s:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=6, help="starts per row (first is cold)")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY") or shutil.which("xwininfo") is None:
        print("needs an X display (xvfb-run) and xwininfo (x11-utils)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    workspace = work / "workspace"
    shutil.copytree(ROOT / "resources" / "samples", workspace)
    env = {**os.environ, "XDG_STATE_HOME": str(work / "state"), "XDG_DATA_HOME": str(work)}
    app_args = ["--workspace", str(workspace), "--settings", str(work / "settings.ini")]
    rows = [("bare PySide6 window (baseline)", [sys.executable, "-c", BARE_QT])]
    rows.append(("app from source (python -m app)", [sys.executable, "-m", "app", *app_args]))
    if BUNDLE.is_file():
        rows.append(("bundle (dist/crownscan)", [str(BUNDLE), *app_args]))
    print(f"start-up to window shown; {os.cpu_count()} CPUs; {args.repeats} starts per row")
    print(f"{'what':<34} {'cold s':>7} {'warm s':>7} {'min s':>7} {'warm / baseline':>16}")
    baseline = None
    for name, cmd in rows:
        times = [time_to_window(cmd, {**env, "PYTHONPATH": str(ROOT)}) for _ in range(args.repeats)]
        warm = statistics.median(times[1:]) if len(times) > 1 else times[0]
        baseline = baseline or warm
        print(
            f"{name:<34} {times[0]:7.2f} {warm:7.2f} {min(times[1:] or times):7.2f} "
            f"{warm / baseline:15.1f}x"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
