"""The window's state follows the files: a watcher on the workspace, its cases and their inputs.

File-system events come in bursts (an editor's save is a write, a rename and a delete), so they
only restart a short timer; when it runs out, a worker re-lists the workspace and compares each
case's inputs with its last run (stat calls, and hashing only for files newer than the run).
Back on the GUI thread the result is cheap to apply: new or removed cases re-read the
workspace (as F5 does), a case whose files changed loses its cached view and its old load
error, and statuses are recomputed from the records and the files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6 import QtCore

from app.core.input_state import (
    InputStamp,
    InputState,
    check_inputs,
    current_status,
    stat_entry,
)
from app.core.workspace import CaseStatus, discover_cases

from .workers import Tag, failure_text

if TYPE_CHECKING:
    from .main_window import MainWindow

DEBOUNCE_MS = 400
"""Quiet time after the last file-system event before the workspace is checked."""


class FileWatch(QtCore.QObject):
    """Watches the open workspace; ``checked`` fires after each check was applied."""

    checked = QtCore.Signal()

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.win = window
        self.states: dict[str, tuple[InputStamp, InputState]] = {}
        self.tag: Tag | None = None
        self.watcher = QtCore.QFileSystemWatcher(self)
        self.watcher.directoryChanged.connect(self.poke)
        self.watcher.fileChanged.connect(self.poke)
        self.timer = QtCore.QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.check_now)
        window.runner.done.connect(self._on_done)
        window.runner.failed.connect(self._on_failed)
        window.run_finished.connect(lambda *_: self.poke())

    def state(self, name: str) -> InputState | None:
        """The input state of case ``name`` from the last check; None before the first, or
        when a run has written a new ``run.json`` since."""
        known, case = self.states.get(name), self.win.cases.get(name)
        if not known or case is None or known[0][-1] != stat_entry(case.run_info_path):
            return None
        return known[1]

    def watch(self) -> None:
        """Follow the workspace just opened and check its cases' inputs now."""
        self._sync_paths()
        self.check_now()

    def stop(self) -> None:
        """Stop watching (the workspace is being left or the window closes)."""
        self.timer.stop()
        if self.tag is not None:
            self.win.runner.cancel(self.tag)
            self.tag = None
        paths = self.watcher.files() + self.watcher.directories()
        if paths:
            self.watcher.removePaths(paths)
        self.states.clear()

    def poke(self, _path: str = "") -> None:
        """A file or folder changed: check once the burst of events is over."""
        if self.win.workspace is not None:
            self.timer.start()

    def check_now(self) -> None:
        """Re-list the workspace and compare the inputs with the last runs, in a worker."""
        self.timer.stop()
        win = self.win
        if win.workspace is None:
            return
        if self.tag is not None:
            win.runner.cancel(self.tag)
        folder, known = win.workspace, dict(self.states)

        def job(token, progress):
            cases = discover_cases(folder)
            return cases, check_inputs(cases, known, token)

        self.tag = win.new_tag("inputs", "")
        win.runner.submit(self.tag, job)

    def _sync_paths(self) -> None:
        """Watch the workspace, each case folder and each input (files replaced by a rename
        drop out of the watcher and are added back here)."""
        win = self.win
        if win.workspace is None:
            return
        want = {str(win.workspace)}
        for case in win.cases.values():
            want.add(str(case.folder))
            want.update(str(p) for p in case.inputs)
        have = set(self.watcher.files() + self.watcher.directories())
        gone = have - want
        if gone:
            self.watcher.removePaths(sorted(gone))
        new = sorted(want - have)
        if new:
            self.watcher.addPaths(new)

    def _on_failed(self, tag: Tag, exc: object, tb: str) -> None:
        if tag == self.tag:
            self.tag = None
            self.win.message(f"Cannot re-read the workspace: {failure_text(exc)}")

    def _on_done(self, tag: Tag, result: Any) -> None:
        if tag != self.tag:
            return
        self.tag = None
        win = self.win
        cases, states = result
        if [c.name for c in cases] != win.order or any(c != win.cases[c.name] for c in cases):
            if not win.runs.busy():
                win.refresh_workspace()
                win.message("The workspace changed on disk: re-read")
            return
        touched = {  # inputs changed (a new run.json alone is no reason to reload)
            n
            for n, (stamp, _) in states.items()
            if self.states.get(n, (stamp,))[0][:-1] != stamp[:-1]
        }
        self.states = states
        for name in touched:
            win.forget_view(name)
        self.apply_statuses()
        if win.current in touched:
            win.reload_current()
        self._sync_paths()
        self.checked.emit()

    def apply_statuses(self) -> None:
        """Recompute every case's status from the records and the last check of the files."""
        win = self.win
        if win.store is None:
            return
        decisions, runs = win.store.latest_decisions(), win.store.latest_runs()
        for name in win.order:
            old = win.statuses.get(name)
            if old is CaseStatus.RUNNING or name in win.transient_errors:
                continue
            known = self.states.get(name)
            new = current_status(
                win.cases[name], decisions.get(name), runs.get(name), known[1] if known else None
            )
            if new != old:
                win.set_status(name, new)


__all__ = ["DEBOUNCE_MS", "FileWatch"]
