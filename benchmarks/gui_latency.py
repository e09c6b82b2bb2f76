"""Stalls of the window's event loop, phase by phase, as the app's latency probe measures them.

Each session is one fresh process of the app on a copy of the sample workspace (four cases,
the bundled demo models; ``--workspace DIR`` for another, e.g. real scans; ``--resolution N``
for a lab model's grid): ``python -m app --workspace W --case <second case> --run
--probe-latency`` gives the phases start-up, show result and run; then a sequence driven by a
timer in the same process, through the window's own slots, the way a technician works:

- show result: every case in turn, then the one just generated, 1 s on each;
- batch with switching: run all new cases while selecting another case every 1.5 s;
- run, then quit during a run: start a run, close the window 2 s into it.

After each session a bare Qt window runs the probe for 20 s: the "idle window (baseline)"
row is what the machine's load alone does to an event loop at that time.

The probe prints one JSON line per phase (``max_ms``, ``p99_ms``: how late a 10 ms timer
fired); the table shows the worst of each over the sessions. ``--tree DIR`` (repeatable)
measures another checkout of the app instead of this one, e.g. the code before a change, in
the same session; the load average of the machine is printed with the figures, since other
processes make every stall longer. ``--stacks MS`` prints, for every stall of at least MS, where
the GUI thread was and which threads held the interpreter (``CROWNSCAN_PROBE_STACKS`` in the app).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_latency.py [--sessions 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("start-up", "show result", "run", "batch with switching", "quit during a run")
IDLE = "idle window (baseline)"
IDLE_S = 20.0
SHOW_S = 1.0
SWITCH_S = 1.5
QUIT_AFTER_S = 2.0


# --- the scripted session (runs inside the app's process) -------------------------------------


def _slot(window, *names: str) -> Callable:
    """The window's slot by the first of ``names`` found on its run controller or on itself
    (the slots moved and were renamed over time; ``--tree`` may measure older code)."""
    for owner in (getattr(window, "runs", None), window):
        for name in names:
            if owner is not None and hasattr(owner, name):
                return getattr(owner, name)
    raise AttributeError(f"the window has none of {names}")


class Session:
    """Drives the window once ``python -m app`` has done its own steps (phase "session")."""

    def __init__(self, app) -> None:
        from PySide6 import QtCore

        self.app = app
        self.steps: Iterator[Callable[[], bool]] | None = None
        self.until: Callable[[], bool] = lambda: False
        self.poll = QtCore.QTimer()
        self.poll.setInterval(50)
        self.poll.timeout.connect(self._poll)
        self.poll.start()

    def _poll(self) -> None:
        from PySide6 import QtCore

        if self.steps is None:
            probe = self.app.findChild(QtCore.QObject, "latencyProbe")
            if probe is None or probe.current != "session":
                return
            self.steps = self._script(probe, self._window())
            self.until = next(self.steps)
        try:
            while self.until():
                self.until = next(self.steps)
        except StopIteration:
            self.poll.stop()

    def _window(self):
        from app.ui.main_window import MainWindow

        return next(w for w in self.app.topLevelWidgets() if isinstance(w, MainWindow))

    @staticmethod
    def _after(seconds: float) -> Callable[[], bool]:
        end = time.monotonic() + seconds
        return lambda: time.monotonic() >= end

    def _script(self, probe, w) -> Iterator[Callable[[], bool]]:
        finished: list[str] = []
        w.run_finished.connect(lambda case, outcome: finished.append(case))
        names = list(w.case_list.names())

        probe.phase("show result")
        for name in [*names, names[min(1, len(names) - 1)]]:  # the last: the one just run
            w.case_list.select(name)
            yield self._after(SHOW_S)

        probe.phase("batch with switching")
        new = [n for n in names if w.case_list.status_text(n) == "new"]
        _slot(w, "run_all_new", "run_all_pending")()
        k = 0
        while not set(new) <= set(finished):
            k += 1
            w.case_list.select(names[k % len(names)])
            yield self._after(SWITCH_S)

        probe.phase("run")
        w.case_list.select(names[0])
        yield self._after(SHOW_S)
        _slot(w, "run_current")()
        yield self._after(QUIT_AFTER_S)
        probe.phase("quit during a run")
        self.poll.stop()  # the close turns the event loop while this generator is running
        w.close()
        yield lambda: False


def idle_child(seconds: float) -> int:
    """A bare window and the probe for ``seconds``: the stalls the machine's load alone makes."""
    from PySide6 import QtCore, QtWidgets

    from app.ui.latency_probe import LatencyProbe

    app = QtWidgets.QApplication([sys.argv[0]])
    window = QtWidgets.QMainWindow()
    window.resize(1500, 920)
    window.show()
    probe = LatencyProbe(app)
    probe.phase(IDLE)
    QtCore.QTimer.singleShot(int(1000 * seconds), app.quit)
    app.exec()
    probe.finish()
    return 0


def child(app_args: list[str]) -> int:
    """Run the app with ``app_args`` and the scripted session."""
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication([sys.argv[0]])
    session = Session(app)
    from app.ui.launch import main

    code = main(app_args)
    del session
    return code


# --- the measuring side -----------------------------------------------------------------------


def _workspace(folder: Path, source: Path | None) -> tuple[Path, str]:
    """A copy of ``source`` (default: the sample workspace plus a fourth case) and the case the
    smoke steps run: the second by name."""
    ws = folder / "workspace"
    if source is None:
        shutil.copytree(ROOT / "resources" / "samples", ws)
        shutil.copytree(ws / "case_001", ws / "case_004")
    else:
        shutil.copytree(source, ws, ignore=shutil.ignore_patterns("output", "*.sqlite*"))
    names = sorted(p.name for p in ws.iterdir() if p.is_dir())
    return ws, names[min(1, len(names) - 1)]


def _phases(child_args: list[str], env: dict, timeout_s: float) -> dict[str, tuple[float, float]]:
    """Run this script as a child; the worst (max_ms, p99_ms) of each phase it printed."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *child_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"session failed ({proc.returncode}): {proc.stderr[-2000:]}")
    for line in proc.stderr.splitlines():
        if line.startswith("stall "):
            print(f"    {line}")
    worst: dict[str, tuple[float, float]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            old = worst.get(row["phase"], (0.0, 0.0))
            worst[row["phase"]] = (max(old[0], row["max_ms"]), max(old[1], row["p99_ms"]))
    return worst


def measure(
    tree: Path,
    timeout_s: float,
    stacks_ms: float | None = None,
    source: Path | None = None,
    resolution: int | None = None,
) -> tuple[dict[str, tuple[float, float]], str]:
    """One session of the app in ``tree`` then a bare window for IDLE_S: worst (max_ms,
    p99_ms) per phase, and the load average before and after."""
    work = Path(tempfile.mkdtemp(prefix="gui-latency-"))
    try:
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "XDG_STATE_HOME": str(work / "state"),
            "XDG_DATA_HOME": str(work / "data"),
            "QT_QPA_PLATFORM": "xcb",
        }
        if stacks_ms is not None:
            env["CROWNSCAN_PROBE_STACKS"] = str(stacks_ms)
        ws, case = _workspace(work, source)
        app_args = ["--workspace", str(ws), "--case", case, "--run"]
        if resolution is not None:
            app_args += ["--resolution", str(resolution)]
        app_args += ["--probe-latency", "--settings", str(work / "settings.ini")]
        load_before = os.getloadavg()[0]
        worst = _phases(["--child", "--", *app_args], env, timeout_s)
        missing = [p for p in PHASES if p not in worst]
        if missing:
            raise RuntimeError(f"no figures for {missing}")
        worst.update(_phases(["--idle", str(IDLE_S)], {**env, "PYTHONPATH": str(ROOT)}, 120))
        return worst, f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _label(tree: Path) -> str:
    rev = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return rev or tree.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2, help="fresh app processes per tree")
    parser.add_argument(
        "--tree", type=Path, action="append", help="checkout of the app to measure (repeatable)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per session")
    parser.add_argument(
        "--workspace",
        type=Path,
        help="measure on a copy of this workspace (default: the samples and a fourth case)",
    )
    parser.add_argument(
        "--resolution", type=int, help="crown grid resolution (default: the model's)"
    )
    parser.add_argument(
        "--stacks",
        type=float,
        metavar="MS",
        help="print the GUI thread's stack during every stall of at least MS",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, help=argparse.SUPPRESS)
    parser.add_argument("app_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.app_args)
    if args.idle is not None:
        return idle_child(args.idle)
    if not os.environ.get("DISPLAY"):
        print("needs an X display: run it under xvfb-run", file=sys.stderr)
        return 2
    trees = args.tree or [ROOT]
    labels = [t.name if len(set(map(_label, trees))) < len(trees) else _label(t) for t in trees]
    print(
        f"event-loop stalls per phase, worst of {args.sessions} session(s) each; "
        f"{os.cpu_count()} CPUs; 10 ms probe timer"
    )
    figures: dict[str, list[dict[str, tuple[float, float]]]] = {}
    for label, tree in zip(labels, trees, strict=True):
        for s in range(args.sessions):
            worst, load = measure(
                tree.resolve(), args.timeout, args.stacks, args.workspace, args.resolution
            )
            figures.setdefault(label, []).append(worst)
            print(f"  {label} session {s + 1}: load average {load}", flush=True)
    header = f"{'phase':<22}" + "".join(f" {lb + ' max ms':>16} {'p99 ms':>8}" for lb in labels)
    print(header)
    for phase in (*PHASES, IDLE):
        cells = ""
        for label in labels:
            runs = figures[label]
            cells += (
                f" {max(r[phase][0] for r in runs):16.0f} {max(r[phase][1] for r in runs):8.0f}"
            )
        print(f"{phase:<22}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
