"""``python -m app [--workspace DIR] [--case NAME] [--run] [--screenshot PNG] [--quit]``.

Opens the window (on the bundled sample workspace the first time). The options make it a smoke
test and a picture maker: open a workspace, select a case, run it and wait, write a screenshot
of the whole window, exit. Errors on that path print one line and exit non-zero.
``--probe-latency`` prints how long the window stalled in each of those steps (one JSON line
per phase, see :mod:`app.ui.latency_probe`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from app import __version__

EXIT_INPUT = 2
EXIT_RUN = 4
PROBE_SETTLE_S = 0.5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="Crownscan desktop application")
    p.add_argument("--version", action="version", version=f"crownscan {__version__}")
    p.add_argument("--workspace", type=Path, help="workspace folder to open (a folder of cases)")
    p.add_argument("--case", help="case to select (folder name)")
    p.add_argument(
        "--pick",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="click this point (mm) on the selected case's preparation: propose its frame",
    )
    p.add_argument("--auto-frame", action="store_true", help="find the selected case's preparation")
    p.add_argument("--run", action="store_true", help="run the selected case and wait for it")
    p.add_argument(
        "--view",
        choices=("occlusal", "buccal", "lingual", "mesial", "distal"),
        help="named 3D view to show (after the steps above, before the screenshot)",
    )
    p.add_argument("--screenshot", type=Path, help="write a PNG of the whole window")
    p.add_argument("--quit", action="store_true", help="exit after the steps above")
    p.add_argument("--models", type=Path, help="models folder (default: settings, else bundled)")
    p.add_argument("--resolution", type=int, help="generation resolution for this session")
    p.add_argument("--settings", type=Path, help="use this INI file instead of the user settings")
    p.add_argument("--size", default="1500x920", help="window size WxH (default 1500x920)")
    p.add_argument(
        "--probe-latency",
        action="store_true",
        help="print the event loop's worst and 99th-percentile stall per phase (JSON lines)",
    )
    return p


def _fail(message: str, code: int) -> int:
    one_line = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"error: {one_line}", file=sys.stderr)
    return code


def _wait(app, condition, timeout_s: float) -> bool:
    """Run the event loop until ``condition()`` holds or the time runs out."""
    from .workers import spin_until

    return spin_until(condition, int(timeout_s * 1000))


def _wait_quietly(condition, timeout_s: float) -> bool:
    """Like :func:`_wait`, answering no input meanwhile (nothing is on the screen to click)."""
    from PySide6 import QtCore

    from .workers import spin_until

    flags = QtCore.QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents
    return spin_until(condition, int(timeout_s * 1000), flags)


def splash_screen():
    """A small card saying the application is starting, shown at once (the window follows
    when its 3D panel and libraries are loaded, 1-3 s)."""
    from PySide6 import QtCore, QtGui, QtWidgets

    pixmap = QtGui.QPixmap(420, 140)
    pixmap.fill(QtGui.QColor(44, 49, 56))
    painter = QtGui.QPainter(pixmap)
    painter.setPen(QtGui.QColor(235, 235, 235))
    font = painter.font()
    font.setPointSize(18)
    painter.setFont(font)
    painter.drawText(QtCore.QRect(24, 30, 380, 40), 0, "Crownscan")
    font.setPointSize(10)
    painter.setFont(font)
    painter.drawText(QtCore.QRect(24, 84, 380, 30), 0, f"{__version__} — starting…")
    painter.end()
    splash = QtWidgets.QSplashScreen(pixmap)
    splash.show()
    QtWidgets.QApplication.processEvents()
    return splash


def _next_phase(app, probe, name: str) -> None:
    """Start measuring phase ``name``, after letting the work the last step deferred (a
    render, a queued signal) land in the phase that caused it."""
    if probe is not None:
        _wait(app, lambda: False, PROBE_SETTLE_S)
        probe.phase(name)


def _started(window) -> bool:
    """The window is up: 3D panel made, models warm, the selected case shown."""
    return (
        window.viewer3d.has_plotter
        and not window.provider_label.text().endswith("loading…")
        and window._view_tag is None
    )


def unexpected_error_hook(window, log_path: Path | None):
    """An ``sys.excepthook`` for the window: a bug in a slot is logged with its traceback (to
    ``log_path`` through :func:`app.core.logfile.setup_logging`), named in the status bar and in
    a dialog that says where the log is, and the window keeps working."""

    def hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        logging.getLogger("crownscan").critical("unhandled exception\n%s", details.rstrip())
        if sys.stderr is not None:  # a windowed Windows executable has none
            sys.stderr.write(details)
        where = (
            f"the details are in {log_path}" if log_path else "the log file could not be written"
        )
        text = f"Unexpected error ({exc_type.__name__}: {exc}); {where}."
        window.message(f"{text} Nothing was lost: saved decisions stay saved.")
        _error_dialog(window, text)

    return hook


def _error_dialog(window, text: str):
    """One non-blocking dialog per window, updated when more errors follow while it is open."""
    from PySide6 import QtCore, QtWidgets

    box = getattr(window, "_unexpected_error_box", None)
    if box is None:
        box = QtWidgets.QMessageBox(window)
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setWindowTitle("Crownscan: unexpected error")
        box.setStandardButtons(QtWidgets.QMessageBox.StandardButton.Ok)
        box.setWindowModality(QtCore.Qt.WindowModality.NonModal)
        window._unexpected_error_box = box
    box.setText(text)
    box.setInformativeText(
        "The window keeps working; saved decisions stay saved. Please send the log file to support."
    )
    box.show()
    return box


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if sys.platform.startswith("linux"):
        # The 3D view (VTK) draws through X11: use xcb (XWayland on a Wayland desktop).
        if "QT_QPA_PLATFORM" not in os.environ and os.environ.get("DISPLAY"):
            os.environ["QT_QPA_PLATFORM"] = "xcb"
        if os.environ.get("QT_QPA_PLATFORM", "xcb") == "xcb" and not os.environ.get("DISPLAY"):
            return _fail(
                "no X display (DISPLAY is not set); on a server run it under "
                'xvfb-run -a -s "-screen 0 1600x1000x24"',
                1,
            )
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        return _fail(f"--size takes WIDTHxHEIGHT, got {args.size}", EXIT_INPUT)
    if args.workspace is not None and not args.workspace.is_dir():
        return _fail(f"{args.workspace}: workspace folder does not exist", EXIT_INPUT)
    if args.screenshot is not None and not args.screenshot.parent.exists():
        return _fail(
            f"{args.screenshot.parent}: folder for the screenshot does not exist", EXIT_INPUT
        )
    if args.models is not None and not args.models.is_dir():
        return _fail(f"{args.models}: models folder does not exist", EXIT_INPUT)
    if args.case is not None and args.workspace is not None:
        from app.core.errors import CrownscanError
        from app.core.workspace import discover_cases

        try:
            names = [c.name for c in discover_cases(args.workspace)]
        except CrownscanError as exc:
            return _fail(str(exc), EXIT_INPUT)
        if args.case not in names:
            return _fail(f"{args.workspace}: no case named '{args.case}'", EXIT_INPUT)
    try:
        return _gui(args, width, height)
    except Exception as exc:  # a bug: still one line on the smoke path
        return _fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_RUN)


def _gui(args: argparse.Namespace, width: int, height: int) -> int:
    from PySide6 import QtCore, QtWidgets

    from app.core.errors import CrownscanError
    from app.core.logfile import setup_logging
    from app.core.paths import legacy_user_data_dir

    from .latency_probe import LatencyProbe
    from .main_window import MainWindow
    from .settings import (
        APPLICATION,
        ORGANIZATION,
        load_settings,
        qsettings,
        sample_workspace_copy,
    )
    from .style import apply_style
    from .viewer3d import preload_qtpy

    log_path = setup_logging()
    logging.getLogger("crownscan").info("crownscan %s starting", __version__)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    apply_style(app)
    store = (
        QtCore.QSettings(str(args.settings), QtCore.QSettings.Format.IniFormat)
        if args.settings is not None
        else qsettings()
    )
    settings = load_settings(store)
    if args.models is not None:
        settings.models_dir = str(args.models.resolve())
    if args.resolution is not None:
        settings.resolution = max(0, args.resolution)

    splash = splash_screen()
    preload_qtpy()
    window = MainWindow(settings, store)
    window.resize(width, height)
    window.viewer3d.make_plotter_soon()
    probe = LatencyProbe(app) if args.probe_latency else None
    code = 0
    previous_hook = sys.excepthook
    sys.excepthook = unexpected_error_hook(window, log_path)
    try:
        workspace = args.workspace
        if workspace is None:
            last = Path(settings.last_workspace) if settings.last_workspace else None
            if last == legacy_user_data_dir() / "sample-workspace":
                last = None  # moved to the new data folder by sample_workspace_copy()
            workspace = last if last is not None and last.is_dir() else sample_workspace_copy()
        try:
            window.open_workspace(workspace)
        except CrownscanError as exc:
            if args.workspace is not None or args.quit:
                return _fail(str(exc), EXIT_INPUT)
            window.message(str(exc))
        # the window shows once its 3D panel is made (pyvista loads on a thread, the OpenGL
        # context takes ~0.25 s on software GL) and it was laid out and drawn once off screen:
        # a window that froze for those just after it appeared would look broken
        _wait_quietly(lambda: window.viewer3d.has_plotter, 120)
        window.grab()
        window.viewer3d.show_after_window()
        window.show()
        splash.finish(window)
        if probe is not None:
            probe.phase("start-up")
            probe.finish_when_hidden(window)
        if probe is not None:
            _wait(app, lambda: _started(window), 120)
        smoke = (
            args.run
            or args.screenshot is not None
            or args.quit
            or args.case is not None
            or args.pick is not None
            or args.auto_frame
        )
        if args.case is not None:
            if args.case not in window.cases:
                return _fail(f"{workspace}: no case named '{args.case}'", EXIT_INPUT)
            _next_phase(app, probe, "show result")
            window.select_case(args.case)
        if smoke and window.current is not None:
            _wait(app, lambda: window._view_tag is None, 120)
        if args.pick is not None or args.auto_frame:
            if window.current is None:
                return _fail(f"{workspace}: no case to place a frame on", EXIT_INPUT)
            located: list[str] = []
            window.frame_located.connect(lambda case, how: located.append(how))
            if args.pick is not None:
                window.framing.set_centre(tuple(args.pick))
            else:
                window.framing.find_preparation()
            if not _wait(app, lambda: bool(located), 120) or located[0] == "problem":
                return _fail(window.message_label.text() or "no frame was found", EXIT_INPUT)
        if args.run:
            if window.current is None:
                return _fail(f"{workspace}: no case to run", EXIT_INPUT)
            if window.crown_model is None:
                return _fail("; ".join(window.model_errors) or "no crown model", 3)
            _next_phase(app, probe, "run")
            outcome: list[str] = []
            window.run_finished.connect(lambda case, result: outcome.append(result))
            window.runs.run_current()
            if not _wait(app, lambda: bool(outcome), 3600):
                return _fail("the run did not finish", EXIT_RUN)
            if outcome[0] != "generated":
                return _fail(window.error_of(window.current) or f"run {outcome[0]}", EXIT_RUN)
        if smoke:
            _wait(app, lambda: not window.provider_label.text().endswith("loading…"), 60)
            _wait(app, lambda: window._view_tag is None, 60)
            print(f"{window.provider_label.text()}; status: {window.message_label.text()}")
        if args.view is not None:
            window.viewer3d.set_view(args.view.capitalize())
        if args.screenshot is not None:
            for _ in range(5):
                app.processEvents()
            try:
                window.save_screenshot(args.screenshot)
            except CrownscanError as exc:
                return _fail(str(exc), EXIT_RUN)
            print(f"screenshot written to {args.screenshot}")
        if args.quit:
            _next_phase(app, probe, "quit")
            return 0
        _next_phase(app, probe, "session")
        code = app.exec()
    finally:
        sys.excepthook = previous_hook
        splash.close()
        window.close()
        window.deleteLater()
        app.processEvents()
        if probe is not None:
            probe.finish()
    return code
