"""The main window: case list, 3D and 2D panels, QA pane, status bar with models and provider.

The window holds the widgets, the menus and the open workspace (its cases, their statuses, the
case shown); controllers do the rest: :mod:`.run_controller` sequences runs, the queue and
cancel, :mod:`.qa_controller` records decisions and walks the cases, :mod:`.frame_controller`
edits the case frame, :mod:`.model_controller` loads the models. Work runs in a
:class:`~app.ui.workers.TaskRunner`; every result is tagged with its case and a generation
number, and only a result whose tag is still the one the window waits for is shown.
"""

from __future__ import annotations

import html
import itertools
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from app.core.crown.frame import CaseFrame
from app.core.errors import CrownscanError
from app.core.input_state import current_status
from app.core.qa_store import Decision, QaStore, error_text
from app.core.workspace import Case, CaseStatus, discover_cases, is_undecided

from .case_list import CaseList
from .case_view import CaseView, case_stamp, load_case_view
from .details import result_notes, run_rows
from .file_watch import FileWatch
from .frame_controller import FINE_TURN_DEG, FrameController
from .model_controller import ModelController
from .qa_aids import install_qa_aids
from .qa_controller import QaController
from .qa_panel import QaPanel
from .run_controller import RunController
from .settings import AppSettings, SettingsDialog, load_settings, qsettings, save_settings
from .viewer2d import Viewer2D
from .viewer3d import Viewer3D
from .workers import Tag, TaskRunner, failure_text

CACHE_SIZE = 4
STOP_WAIT_MS = 400
"""How long a closing window waits, saying "stopping…", for cancelled work to return before it
goes; a worker inside a long model step is then waited for with the window gone."""


def key_text(action: QtGui.QAction) -> str:
    """An action's keys as the technician reads them ("N or Space")."""
    return " or ".join(
        k.toString(QtGui.QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()
    )


class MainWindow(QtWidgets.QMainWindow):
    """``view_shown(case)``, ``run_finished(case, outcome)``, ``frame_located(case, outcome)``
    let tests and the smoke path wait."""

    view_shown = QtCore.Signal(str)
    run_finished = QtCore.Signal(str, str)
    models_ready = QtCore.Signal()
    frame_located = QtCore.Signal(str, str)

    def __init__(
        self,
        settings: AppSettings | None = None,
        store: QtCore.QSettings | None = None,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Crownscan")
        self.setObjectName("MainWindow")
        self.qsettings = store if store is not None else qsettings()
        self.settings = settings if settings is not None else load_settings(self.qsettings)
        self.pool = self.settings.session_pool()
        self.runner = TaskRunner(self, threads=3)
        self.runner.done.connect(self._on_done)
        self.runner.failed.connect(self._on_failed)

        self.workspace: Path | None = None
        self.store: QaStore | None = None
        self.cases: dict[str, Case] = {}
        self.order: list[str] = []
        self.statuses: dict[str, CaseStatus] = {}
        self.transient_errors: dict[str, str] = {}
        self.current: str | None = None
        self.crown_model: Any = None
        self.seg_model: Any = None
        self.model_errors: list[str] = []
        self.providers: list[str] = []
        self.provider_notes: list[str] = []
        self.last_outcome: dict[str, str] = {}
        self._gens = itertools.count(1)
        self._view_tag: Tag | None = None
        self._cache: OrderedDict[str, CaseView] = OrderedDict()
        self._invalidated: dict[str, int] = {}
        self.frames: dict[str, CaseFrame] = {}
        self.frame_sources: dict[str, str] = {}
        self.shown: CaseView | None = None
        self._closed = False
        self.runs = RunController(self)
        self.decisions = QaController(self)
        self.framing = FrameController(self)
        self.models = ModelController(self)
        self.file_watch = FileWatch(self)

        self._build_ui()
        self._build_actions()
        self.aids = install_qa_aids(self)
        self.models.load_models()
        self.resize(1500, 920)

    # ============================================================ layout
    def _build_ui(self) -> None:
        self.case_list = CaseList()
        self.case_list.case_selected.connect(self.select_case)
        self.viewer3d = Viewer3D()
        self.viewer3d.centre_picked.connect(self.framing.set_centre)
        self.viewer2d = Viewer2D()
        self.viewer2d.set_overlay_defaults(
            self.settings.overlay_opacity, self.settings.overlay_mode
        )
        self.qa = QaPanel()
        self.qa.decided.connect(self.decisions.decide)
        self.qa.next_undecided.connect(self.decisions.next_undecided)
        self.qa.previous.connect(self.decisions.previous_case)
        self.qa.note_left.connect(self.focus_cases)
        self.qa.note_saved.connect(self.decisions.save_note)

        left = QtWidgets.QWidget()
        ll = QtWidgets.QVBoxLayout(left)
        ll.setContentsMargins(4, 4, 0, 4)
        self.workspace_label = QtWidgets.QLabel("No workspace")
        self.workspace_label.setObjectName("workspaceLabel")
        self.workspace_label.setWordWrap(True)
        ll.addWidget(self.workspace_label)
        self.filter_edit = QtWidgets.QLineEdit()
        self.filter_edit.setPlaceholderText("Filter cases (name or status)")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.case_list.set_filter)
        ll.addWidget(self.filter_edit)
        ll.addWidget(self.case_list, 1)
        buttons = QtWidgets.QHBoxLayout()
        self.run_button = QtWidgets.QPushButton("Run case")
        self.run_button.setObjectName("runButton")
        self.run_all_button = QtWidgets.QPushButton("Run all new")
        self.run_button.clicked.connect(self.runs.run_current)
        self.run_all_button.clicked.connect(self.runs.run_all_new)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.run_all_button)
        ll.addLayout(buttons)

        self.center = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.center.addWidget(self.viewer3d)
        self.center.addWidget(self.viewer2d)
        self.center.setChildrenCollapsible(False)
        self.center.setStretchFactor(0, 11)
        self.center.setStretchFactor(1, 9)
        self.center.setSizes([550, 450])

        self.main_split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.main_split.addWidget(left)
        self.main_split.addWidget(self.center)
        self.main_split.addWidget(self.qa)
        self.main_split.setStretchFactor(1, 1)
        self.main_split.setSizes([230, 1000, 290])
        self.setCentralWidget(self.main_split)

        sb = self.statusBar()
        self.message_label = QtWidgets.QLabel("")
        self.models_label = QtWidgets.QLabel("Models: —")
        self.provider_label = QtWidgets.QLabel("Provider: —")
        self.provider_label.setObjectName("providerLabel")
        self.counts_label = QtWidgets.QLabel("")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFixedWidth(220)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.runs.cancel_shown)
        self.cancel_all_button = QtWidgets.QPushButton("Cancel all")
        self.cancel_all_button.clicked.connect(self.runs.cancel_all)
        for b in (self.cancel_button, self.cancel_all_button):
            b.setEnabled(False)
            b.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        sb.addWidget(self.message_label, 1)
        sb.addPermanentWidget(self.models_label)
        sb.addPermanentWidget(self.provider_label)
        sb.addPermanentWidget(self.counts_label)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)
        sb.addPermanentWidget(self.cancel_all_button)

    def _action(
        self,
        text: str,
        slot: Callable,
        shortcuts: tuple[str, ...] = (),
        menu: QtWidgets.QMenu | None = None,
    ) -> QtGui.QAction:
        act = QtGui.QAction(text, self)
        if shortcuts:
            act.setShortcuts([QtGui.QKeySequence(s) for s in shortcuts])
            act.setToolTip(f"{act.iconText()} ({key_text(act)})")
        act.setShortcutContext(QtCore.Qt.ShortcutContext.WindowShortcut)
        act.triggered.connect(lambda _=False: slot())
        self.addAction(act)
        if menu is not None:
            menu.addAction(act)
        return act

    def _build_actions(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        self._action("&Open workspace…", self.ask_open_workspace, ("Ctrl+O",), file_menu)
        self.recent_menu = file_menu.addMenu("Recent workspaces")
        self._action("Open &sample workspace", self.open_sample_workspace, (), file_menu)
        self._action("&Refresh workspace", self.refresh_workspace, ("F5",), file_menu)
        file_menu.addSeparator()
        self._action("&Export QA report…", self.decisions.ask_export_report, ("Ctrl+E",), file_menu)
        self._action("Se&ttings…", self.edit_settings, ("Ctrl+,",), file_menu)
        file_menu.addSeparator()
        self._action("&Quit", self.close, ("Ctrl+Q",), file_menu)
        self._fill_recent()

        case_menu = mb.addMenu("&Case")
        self.act_run = self._action("&Run case", self.runs.run_current, ("Ctrl+R",), case_menu)
        self.act_run_all = self._action(
            "Run &all new", self.runs.run_all_new, ("Ctrl+Shift+R",), case_menu
        )
        self.act_cancel = self._action(
            "&Cancel this case's run", self.runs.cancel_shown, ("Esc",), case_menu
        )
        self.act_cancel_all = self._action(
            "Cancel a&ll runs", self.runs.cancel_all, ("Shift+Esc",), case_menu
        )
        case_menu.addSeparator()
        self._action("Approve", lambda: self.qa.decide(Decision.APPROVED), ("A",), case_menu)
        self._action("Reject", lambda: self.qa.decide(Decision.REJECTED), ("R",), case_menu)
        self._action(
            "Needs rework", lambda: self.qa.decide(Decision.NEEDS_REWORK), ("W",), case_menu
        )
        self._action(
            "Save note with the decision",
            self.decisions.save_note,
            ("Ctrl+Return", "Ctrl+Enter"),
            case_menu,
        )
        self._action("Next undecided", self.decisions.next_undecided, ("N", "Space"), case_menu)
        self._action("Previous", self.decisions.previous_case, ("P",), case_menu)
        self._action("Write a note", self.qa.note.setFocus, ("Ctrl+N",), case_menu)
        case_menu.addSeparator()
        self._action("Open output folder", self.open_output_folder, (), case_menu)
        self._build_frame_actions(mb.addMenu("Fra&me"))

        view_menu = mb.addMenu("&View")
        group = QtGui.QActionGroup(self)
        for text, mode in (
            ("3D and 2D side by side", "side"),
            ("3D above 2D", "stacked"),
            ("3D only", "3d"),
            ("2D only", "2d"),
        ):
            act = self._action(text, lambda m=mode: self.set_layout(m), (), view_menu)
            act.setCheckable(True)
            act.setChecked(mode == "side")
            group.addAction(act)
        view_menu.addSeparator()
        self._action("Reset camera", self.viewer3d.reset_camera, ("Home",), view_menu)
        for name in ("Occlusal", "Buccal", "Lingual", "Mesial", "Distal"):
            self._action(f"{name} view", lambda n=name: self.viewer3d.set_view(n), (), view_menu)

        self.models_menu = mb.addMenu("M&odels")
        self.models_menu.aboutToShow.connect(self.models.fill_models_menu)

        help_menu = mb.addMenu("&Help")
        self._action("&Keyboard shortcuts", self.show_shortcuts, ("F1",), help_menu)
        self._action("About Crownscan", self.show_about, (), help_menu)
        for button, action in (
            (self.run_button, self.act_run),
            (self.run_all_button, self.act_run_all),
            (self.cancel_button, self.act_cancel),
            (self.cancel_all_button, self.act_cancel_all),
        ):
            button.setToolTip(action.toolTip())
        self.runs.update_actions()

    def _build_frame_actions(self, menu: QtWidgets.QMenu) -> None:
        """The case-frame menu: place the frame, then correct it; each change applies at once."""
        menu.addAction(self.viewer3d.pick_action)
        self._action("&Find preparation", self.framing.find_preparation, ("Ctrl+F",), menu)
        menu.addSeparator()
        self._action(
            "F&lip occlusal direction", self.framing.flip_occlusal, ("Ctrl+Shift+F",), menu
        )
        self._action(
            "Align occlusal to &view", self.framing.align_occlusal_to_view, ("Ctrl+Shift+V",), menu
        )
        for text, deg, keys in (
            ("Turn box 90° counter-clockwise", 90.0, "Ctrl+Left"),
            ("Turn box 90° clockwise", -90.0, "Ctrl+Right"),
            (f"Turn box {FINE_TURN_DEG:g}° counter-clockwise", FINE_TURN_DEG, "Ctrl+Shift+Left"),
            (f"Turn box {FINE_TURN_DEG:g}° clockwise", -FINE_TURN_DEG, "Ctrl+Shift+Right"),
        ):
            self._action(text, lambda d=deg: self.framing.turn_frame(d), (keys,), menu)
        menu.addSeparator()
        self._action("&Clear case frame", self.framing.clear_frame, ("Ctrl+Delete",), menu)

    def set_layout(self, mode: str) -> None:
        """Arrange the 3D and 2D panels: side by side, stacked, or one of them alone."""
        self.center.setOrientation(
            QtCore.Qt.Orientation.Vertical
            if mode == "stacked"
            else QtCore.Qt.Orientation.Horizontal
        )
        self.viewer3d.setVisible(mode != "2d")
        self.viewer2d.setVisible(mode != "3d")
        self.viewer3d.render()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for w in self.settings.recent_workspaces:
            act = self.recent_menu.addAction(w)
            act.triggered.connect(lambda _=False, w=w: self._open_from_menu(w))
        self.recent_menu.setEnabled(bool(self.settings.recent_workspaces))

    # ============================================================ workspace
    def open_sample_workspace(self) -> None:
        """Open (a writable copy of) the bundled sample workspace."""
        from .settings import sample_workspace_copy

        self.open_workspace(sample_workspace_copy())

    def ask_open_workspace(self) -> None:
        start = str(self.workspace or Path.home())
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open workspace", start)
        if folder:
            self._open_from_menu(folder)

    def _open_from_menu(self, folder: str) -> None:
        try:
            self.open_workspace(folder)
        except CrownscanError as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot open workspace", str(exc))

    def open_workspace(self, folder: str | Path) -> None:
        """Open a workspace: list its cases with their status from the QA database and outputs.

        Raises :class:`~app.core.errors.InputError` when the folder is not usable.
        """
        folder = Path(folder).resolve()
        found = discover_cases(folder)
        store = QaStore(folder)
        self._leave_workspace()
        self.workspace, self.store = folder, store
        self.cases = {c.name: c for c in found}
        self.order = [c.name for c in found]
        self.workspace_label.setText(f"<b>{folder.name}</b><br><small>{folder}</small>")
        self.workspace_label.setToolTip(str(folder))
        self.setWindowTitle(f"Crownscan — {folder.name}")
        decisions, runs = store.latest_decisions(), store.latest_runs()
        self.frames = store.frames()
        self.frame_sources = store.frame_sources()
        self.statuses = {
            n: current_status(self.cases[n], decisions.get(n), runs.get(n)) for n in self.order
        }
        self.case_list.set_cases([(n, self.statuses[n], self.error_of(n)) for n in self.order])
        self.settings.add_recent(folder)
        save_settings(self.settings, self.qsettings)
        self._fill_recent()
        self.update_counts()
        self.message(f"Opened {folder} ({len(self.order)} cases)")
        self.case_list.setFocus()  # single-letter review keys must not land in the filter box
        if self.order:
            first = next((n for n in self.order if is_undecided(self.statuses[n])), self.order[0])
            self.case_list.select(first)
        else:
            self.select_case(None)
        self.runs.update_actions()
        self.file_watch.watch()

    def refresh_workspace(self) -> None:
        """Re-read the folder and the database (new cases, other technicians' decisions)."""
        if self.workspace is None or self.runs.busy():
            if self.runs.busy():
                self.message("Refresh after the run finishes (or Cancel all)")
            return
        keep = self.current
        drafts = dict(self.decisions.drafts)
        if keep is not None:
            drafts[keep] = self.qa.note.toPlainText()
        self.open_workspace(self.workspace)
        self.decisions.drafts.update((n, t) for n, t in drafts.items() if n in self.cases)
        if self.current is not None:
            self.qa.note.setPlainText(self.decisions.drafts.get(self.current, ""))
        if keep in self.cases:
            self.case_list.select(keep)

    def _leave_workspace(self) -> None:
        self.file_watch.stop()
        self.runner.cancel_where(lambda t: t.kind != "warmup")
        self.runs.reset()
        self._view_tag = None
        self._cache.clear()
        self._invalidated.clear()
        self.decisions.drafts.clear()
        self.frames = {}
        self.frame_sources = {}
        self.framing.locate_tag = None
        self.shown = None
        self.transient_errors.clear()
        self.last_outcome.clear()
        if self.store is not None:
            self.store.close()
            self.store = None
        self.current = None
        self.viewer3d.clear()
        self.viewer2d.clear()

    def _status_from_disk(self, name: str) -> CaseStatus:
        case = self.cases[name]
        assert self.store is not None
        dec = self.store.latest_decisions().get(name)
        run = self.store.latest_runs().get(name)
        return current_status(case, dec, run, self.file_watch.state(name))

    def error_of(self, name: str) -> str | None:
        """Why case ``name`` is in error (load problem, failed run, unusable folder), or None."""
        if name in self.transient_errors:
            return self.transient_errors[name]
        if self.store is None or name not in self.cases:
            return None
        if self.statuses.get(name) is not CaseStatus.ERROR:
            return None
        return error_text(self.cases[name], self.store.latest_runs().get(name))

    def set_status(self, name: str, status: CaseStatus | None = None) -> None:
        """Set (or recompute from the database and outputs) a case's status and show it."""
        if name not in self.cases:
            return
        if status is None:
            status = (
                CaseStatus.ERROR if name in self.transient_errors else self._status_from_disk(name)
            )
        self.statuses[name] = status
        self.case_list.update_case(name, status, self.error_of(name))
        if name == self.current:
            self.qa.show_case(name, status)
            self.show_details()
        self.update_counts()
        self.runs.update_actions()

    def update_counts(self) -> None:
        """The status bar's count of cases per status (and the batch's progress)."""
        counts: dict[CaseStatus, int] = {}
        for s in self.statuses.values():
            counts[s] = counts.get(s, 0) + 1
        parts = [f"{counts[s]} {s.value}" for s in CaseStatus if counts.get(s)]
        if self.runs.queue:
            parts.append(f"{len(self.runs.queue)} queued")
        text = ", ".join(parts) if parts else "no cases"
        batch = self.runs.batch_text()
        self.counts_label.setText(f"{batch} · {text}" if batch else text)

    # ============================================================ selection & view
    def select_case(self, name: str | None) -> None:
        """Show ``name``. Loading the case left is cancelled; runs and the queue go on."""
        if name == self.current and name is not None:
            return
        left = self.current
        if left is not None:
            if self._view_tag is not None:
                if self._view_tag.kind == "load":
                    self.runner.cancel(self._view_tag)
                self._view_tag = None
            self.framing.cancel_locate()
        if left is not None:
            self.decisions.drafts[left] = self.qa.note.toPlainText()
        self.current = name
        self.shown = None
        if self.case_list.current_name() != name and name is not None:
            self.case_list.blockSignals(True)
            self.case_list.select(name)
            self.case_list.blockSignals(False)
        self.qa.note.setPlainText(self.decisions.drafts.get(name, "") if name else "")
        self.runs.update_actions()
        if name is None:
            self.qa.show_case(None, None)
            self.viewer3d.clear()
            self.viewer2d.clear()
            return
        self.qa.show_case(name, self.statuses.get(name))
        self.decisions.show_history()
        self.show_details()
        case = self.cases[name]
        cached = self._cache.get(name)
        if cached is not None and cached.stamp == case_stamp(case):
            self._cache.move_to_end(name)
            self.show_view(cached)
            return
        self.viewer3d.clear()
        self.viewer2d.clear("loading…")
        prefetch = next(
            (t for t in self.runner.active() if t.kind == "prefetch" and t.case == name), None
        )
        if prefetch is not None:
            self._view_tag = prefetch
            return
        self._view_tag = self.new_tag("load", name)
        self.runner.submit(self._view_tag, lambda token, progress: load_case_view(case, token))

    def forget_view(self, name: str) -> None:
        """The files of ``name`` changed: drop its cached view and the load error it gave."""
        self._cache.pop(name, None)
        self.transient_errors.pop(name, None)

    def reload_current(self) -> None:
        """Load the shown case again from its files (its note draft is kept)."""
        name = self.current
        if name is None:
            return
        self.decisions.drafts[name] = self.qa.note.toPlainText()
        self.forget_view(name)
        self.current = None
        self.select_case(name)

    def new_tag(self, kind: str, case: str) -> Tag:
        """A tag for new work of ``kind`` on ``case``, of a generation no earlier tag has."""
        return Tag(kind, case, next(self._gens))

    def shown_run_info(self, name: str) -> dict | None:
        """The ``run.json`` of the result shown for ``name`` (None if another case is shown)."""
        view = self.shown
        return view.run_info if view is not None and view.case == name else None

    def replace_view(self, tag: Tag, view: CaseView) -> None:
        """A run produced ``view``: views of the case loaded before it are stale from now on."""
        self._invalidated[tag.case] = tag.gen
        self.runner.cancel_where(lambda t: t.case == tag.case and t.kind in ("load", "prefetch"))
        if self._view_tag is not None and self._view_tag.case == tag.case:
            self._view_tag = None
        self.remember(view)

    def _on_done(self, tag: Tag, result: Any) -> None:
        if tag.kind not in ("load", "prefetch"):
            return
        view: CaseView = result
        if tag.case in self.cases and tag.gen > self._invalidated.get(tag.case, 0):
            self.remember(view)
        if tag == self._view_tag and tag.case == self.current:
            self._view_tag = None
            self.show_view(view)

    def _on_failed(self, tag: Tag, exc: object, tb: str) -> None:
        if tag.kind in ("load", "prefetch") and tag == self._view_tag:
            text = failure_text(exc)
            self._view_tag = None
            self.viewer2d.clear(text)
            self.transient_errors[tag.case] = text
            self.set_status(tag.case, CaseStatus.ERROR)

    def show_view(self, view: CaseView) -> None:
        """Show a loaded or generated case in the panels (if it is still the current case)."""
        if view.case != self.current:
            return
        prev = self.shown
        keep_camera = prev is not None and prev.case == view.case and prev.crown is not None
        self.shown = view
        self.viewer3d.set_scan(view.scan, reset=False)
        self.viewer3d.set_crown(view.crown)
        self.viewer3d.set_message(
            None if view.scan is not None else "The scan could not be shown: see Details"
        )
        self.framing.show_frame()
        if not keep_camera:
            self.viewer3d.show_new_case()
        if self.seg_model is not None:
            self.viewer2d.set_classes(
                [c.name for c in self.seg_model.classes], self.seg_model.palette
            )
        self.viewer2d.set_images(view.images)
        if not view.images:
            self.viewer2d.clear_view("no images in this case")
        if view.error:
            self.transient_errors[view.case] = view.error
            self.set_status(view.case, CaseStatus.ERROR)
        elif self.transient_errors.pop(view.case, None) is not None:
            self.set_status(view.case)  # the files were fixed since
        self.show_details()
        self.view_shown.emit(view.case)
        self._prefetch_next()

    def _prefetch_next(self) -> None:
        """Load the next undecided case's scan and images while the technician reviews this one."""
        nxt = self.decisions.neighbour(+1, undecided_only=True)
        if nxt is None or nxt in self._cache:
            return
        if any(t.case == nxt and t.kind in ("prefetch", "load") for t in self.runner.active()):
            return
        case = self.cases[nxt]
        self.runner.submit(
            self.new_tag("prefetch", nxt),
            lambda token, progress: load_case_view(case, token),
        )

    def remember(self, view: CaseView) -> None:
        """Keep ``view`` among the last few shown or loaded cases."""
        self._cache[view.case] = view
        self._cache.move_to_end(view.case)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def show_details(self) -> None:
        """Fill the Details pane for the current case (status, files, last run, frame, notes)."""
        name = self.current
        if name is None or name not in self.cases:
            self.qa.show_details([], None)
            return
        case = self.cases[name]
        info = self.shown_run_info(name)
        rows = [
            ("Status", self.statuses.get(name, CaseStatus.NEW).value),
            ("Folder", str(case.folder)),
            ("Scan", case.scan.name if case.scan else "—"),
            ("Images", ", ".join(p.name for p in case.images) or "—"),
            *run_rows(info),
        ]
        if case.crown_path.is_file():
            rows.append(("Output", str(case.output_dir)))
        rows += self.framing.frame_rows(name)
        outcome = self.last_outcome.get(name)
        if outcome:
            rows.append(("This session", outcome))
        shown = self.shown if self.shown is not None and self.shown.case == name else None
        inputs_now = shown.input_hash if shown is not None and self.store is not None else None
        latest = None
        if inputs_now:
            latest = self.store.latest_decisions().get(name)
            rows.append(("Inputs sha256", inputs_now[:16] + "…"))
        self.qa.show_details(rows, self.error_of(name), result_notes(info, inputs_now, latest))

    # ============================================================ settings
    def edit_settings(self) -> None:
        dlg = SettingsDialog(self.settings, self)
        if dlg.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            self.apply_settings(dlg.result_settings())
        dlg.deleteLater()

    def apply_settings(self, new: AppSettings) -> None:
        """Store new settings; a new provider chain or models folder takes effect at once."""
        old = self.settings
        self.settings = new
        save_settings(new, self.qsettings)
        self.viewer2d.set_overlay_defaults(new.overlay_opacity, new.overlay_mode)
        self.aids.distances.refresh()
        keys = ("providers", "cpu_threads", "models_dir", "server", "server_fallback")
        if any(getattr(old, k) != getattr(new, k) for k in keys):
            self.pool = new.session_pool()
            self.models.load_models()

    def open_output_folder(self) -> None:
        if self.current is None:
            return
        folder = self.cases[self.current].output_dir
        if not folder.is_dir():
            self.message(f"{self.current}: no outputs yet")
            return
        QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(folder)))

    def shortcut_rows(self) -> list[tuple[str, str]]:
        """Every keyboard shortcut of the window with what it does, in menu order."""
        rows = [
            (key_text(act), act.iconText())
            for act in self.actions()
            if not act.shortcut().isEmpty()
        ]
        return rows + [
            ("Esc (in the note)", "Leave the note; the review keys work again"),
            ("Ctrl+Enter (in the note)", "Save the note with the case's current decision"),
        ]

    def show_shortcuts(self) -> None:
        """Help → Keyboard shortcuts: a table of every key the window answers to."""
        rows = "".join(
            f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
            for k, v in self.shortcut_rows()
        )
        box = QtWidgets.QMessageBox(self)
        box.setWindowTitle("Keyboard shortcuts")
        box.setTextFormat(QtCore.Qt.TextFormat.RichText)
        box.setText(f"<table cellspacing='4'>{rows}</table>")
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()

    def focus_cases(self) -> None:
        """Give the keyboard back to the window (the case list), where A, R, W, N, P and Space
        act at once; called after a decision and when Esc leaves the note."""
        self.case_list.setFocus(QtCore.Qt.FocusReason.ShortcutFocusReason)

    def show_about(self) -> None:
        QtWidgets.QMessageBox.about(self, "About Crownscan", self.models.about_text())

    # ============================================================ misc
    def message(self, text: str) -> None:
        self.message_label.setText(text)
        self.message_label.setToolTip(text)

    def grab_window(self) -> QtGui.QImage:
        """The whole window as an image, with the 3D view rendered into it (never black)."""
        self.viewer3d.render()
        image = self.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
        if self.viewer3d.isVisible():
            arr = self.viewer3d.render_image()
            shot = QtGui.QImage(
                np.ascontiguousarray(arr).data,
                arr.shape[1],
                arr.shape[0],
                3 * arr.shape[1],
                QtGui.QImage.Format.Format_RGB888,
            ).copy()
            plot = self.viewer3d.plotter
            pos = plot.mapTo(self, QtCore.QPoint(0, 0))
            target = QtCore.QRectF(pos.x(), pos.y(), plot.width(), plot.height())
            painter = QtGui.QPainter(image)
            painter.drawImage(target, shot)
            painter.end()
        return image

    def save_screenshot(self, path: str | Path) -> None:
        from app.core.fileio import atomic_write

        image = self.grab_window()

        def write(tmp: Path) -> None:
            if not image.save(str(tmp), "PNG"):
                raise CrownscanError(path, "cannot write the screenshot")

        atomic_write(Path(path), write)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt name)
        if not self._closed and self.runner.running():
            self.message("stopping…")
            self.progress.setFormat("stopping…")
            self.cancel_button.setEnabled(False)
            self.runner.stop(STOP_WAIT_MS)
            self.hide()
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Cancel all work, wait for the workers, close the plotter and the database (once)."""
        if self._closed:
            return
        self._closed = True
        self.file_watch.stop()
        self.runs.queue.clear()
        self.runner.shutdown()
        self._cache.clear()
        self.shown = None
        self.viewer2d.shutdown()
        self.viewer3d.shutdown()
        if self.store is not None:
            self.store.close()
            self.store = None


__all__ = ["MainWindow"]
