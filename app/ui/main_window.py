"""The main window: case list, 3D and 2D panels, QA pane, status bar with models and provider.

Everything the window does goes through ``app.core`` (cases, pipelines, runtime). Work runs in
a :class:`~app.ui.workers.TaskRunner`; every result is tagged with its case and a generation
number, and only a result whose tag is still the one the window waits for is shown.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from app.core import cases
from app.core.cases import Case, CaseStatus, Decision, QaRecord, QaStore
from app.core.crown.frame import CaseFrame, FrameTransform
from app.core.errors import CrownscanError
from app.core.manifest import Frame

from .case_list import CaseList
from .case_view import CaseView, case_stamp, load_case_view, view_from_result
from .qa_panel import QaPanel
from .settings import AppSettings, SettingsDialog, load_settings, qsettings, save_settings
from .viewer2d import Viewer2D
from .viewer3d import Viewer3D
from .workers import Tag, TaskRunner

PROVIDER_LABELS = {"tensorrt": "TensorRT", "cuda": "CUDA", "cpu": "CPU"}
CACHE_SIZE = 4
FINE_TURN_DEG = 5.0
LOCATE_KINDS = ("propose", "find")
FRAME_SOURCES = {
    "picked": "picked centre, model's axes",
    "proposed": "proposed from the picked point",
    "found": "found automatically",
    "given": "given (command line or earlier version)",
    "default": "model default",
}
"""How the Details pane names where a case frame came from."""
STALE_RESULT = (
    "The input files changed after this result was generated: it was made from other inputs."
    " Run the case again before approving it."
)


@dataclass(frozen=True)
class LocateProblem:
    """Why the preparation could not be located (a ``LocateError`` message for the technician)."""

    text: str


def vec_text(v: np.ndarray | tuple[float, ...]) -> str:
    """A direction rounded for the technician."""
    return "(" + ", ".join(f"{round(float(x), 2) + 0.0:+.2f}" for x in v) + ")"


def scan_arrays(poly: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and triangles (F, 3) of a shown scan, copied so a worker may own them."""
    vertices = np.array(poly.points, dtype=np.float64)
    faces = np.array(poly.faces, dtype=np.int64).reshape(-1, 4)[:, 1:] if poly.n_cells else None
    return vertices, np.empty((0, 3), np.int64) if faces is None else faces


def provider_label(providers: list[str]) -> str:
    """The provider a session really runs on (its first), as a technician reads it."""
    return PROVIDER_LABELS.get(providers[0], providers[0]) if providers else "—"


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
        self._qsettings = store if store is not None else qsettings()
        self.settings = settings if settings is not None else load_settings(self._qsettings)
        self.pool = self.settings.session_pool()
        self.runner = TaskRunner(self, threads=3)
        self.runner.progress.connect(self._on_progress)
        self.runner.done.connect(self._on_done)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(self._on_cancelled)

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
        self._models_checked: Any = None
        self.providers: list[str] = []
        self.provider_notes: list[str] = []
        self.last_outcome: dict[str, str] = {}
        self._gens = itertools.count(1)
        self._view_tag: Tag | None = None
        self._run_tag: Tag | None = None
        self._queue: list[str] = []
        self._batch = {"total": 0, "done": 0, "errors": 0, "active": False}
        self._cache: OrderedDict[str, CaseView] = OrderedDict()
        self._invalidated: dict[str, int] = {}
        self._drafts: dict[str, str] = {}
        self.frames: dict[str, CaseFrame] = {}
        self.frame_sources: dict[str, str] = {}
        self._locate_tag: Tag | None = None
        self._run_after_locate: str | None = None
        self._shown: CaseView | None = None
        self._closed = False

        self._build_ui()
        self._build_actions()
        self.load_models()
        self.resize(1500, 920)

    # ============================================================ layout
    def _build_ui(self) -> None:
        self.case_list = CaseList()
        self.case_list.case_selected.connect(self.select_case)
        self.viewer3d = Viewer3D()
        self.viewer3d.centre_picked.connect(self.set_centre)
        self.viewer2d = Viewer2D()
        self.viewer2d.set_overlay_defaults(
            self.settings.overlay_opacity, self.settings.overlay_mode
        )
        self.qa = QaPanel()
        self.qa.decided.connect(self.decide)
        self.qa.next_pending.connect(self.next_pending)
        self.qa.previous.connect(self.previous_case)

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
        self.run_all_button = QtWidgets.QPushButton("Run all pending")
        self.run_button.clicked.connect(self.run_current)
        self.run_all_button.clicked.connect(self.run_all_pending)
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
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_runs)
        sb.addWidget(self.message_label, 1)
        sb.addPermanentWidget(self.models_label)
        sb.addPermanentWidget(self.provider_label)
        sb.addPermanentWidget(self.counts_label)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)

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
        self._action("&Export QA report…", self.ask_export_report, ("Ctrl+E",), file_menu)
        self._action("Se&ttings…", self.edit_settings, ("Ctrl+,",), file_menu)
        file_menu.addSeparator()
        self._action("&Quit", self.close, ("Ctrl+Q",), file_menu)
        self._fill_recent()

        case_menu = mb.addMenu("&Case")
        self.act_run = self._action("&Run case", self.run_current, ("Ctrl+R",), case_menu)
        self.act_run_all = self._action(
            "Run &all pending", self.run_all_pending, ("Ctrl+Shift+R",), case_menu
        )
        self.act_cancel = self._action("&Cancel", self.cancel_runs, ("Esc",), case_menu)
        case_menu.addSeparator()
        self._action("Approve", lambda: self.qa.decide(Decision.APPROVED), ("A",), case_menu)
        self._action("Reject", lambda: self.qa.decide(Decision.REJECTED), ("R",), case_menu)
        self._action(
            "Needs rework", lambda: self.qa.decide(Decision.NEEDS_REWORK), ("W",), case_menu
        )
        self._action("Next pending", self.next_pending, ("N", "Space"), case_menu)
        self._action("Previous", self.previous_case, ("P",), case_menu)
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
        self.models_menu.aboutToShow.connect(self._fill_models_menu)

        help_menu = mb.addMenu("&Help")
        self._action("About Crownscan", self.show_about, (), help_menu)

    def _build_frame_actions(self, menu: QtWidgets.QMenu) -> None:
        """The case-frame menu: place the frame, then correct it; each change applies at once."""
        menu.addAction(self.viewer3d.pick_action)
        self._action("&Find preparation", self.find_preparation, ("Ctrl+F",), menu)
        menu.addSeparator()
        self._action("F&lip occlusal direction", self.flip_occlusal, ("Ctrl+Shift+F",), menu)
        self._action(
            "Align occlusal to &view", self.align_occlusal_to_view, ("Ctrl+Shift+V",), menu
        )
        for text, deg, keys in (
            ("Turn box 90° counter-clockwise", 90.0, "Ctrl+Left"),
            ("Turn box 90° clockwise", -90.0, "Ctrl+Right"),
            (f"Turn box {FINE_TURN_DEG:g}° counter-clockwise", FINE_TURN_DEG, "Ctrl+Shift+Left"),
            (f"Turn box {FINE_TURN_DEG:g}° clockwise", -FINE_TURN_DEG, "Ctrl+Shift+Right"),
        ):
            self._action(text, lambda d=deg: self.turn_frame(d), (keys,), menu)
        menu.addSeparator()
        self._action("&Clear case frame", self.clear_frame, ("Ctrl+Delete",), menu)

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

    # ============================================================ models
    def load_models(self) -> None:
        """Find the crown and segmentation models in the configured folder; warm their sessions.

        Each kind takes the model chosen in the settings, else the folder's default; a model
        that does not load is skipped (see the Models menu for which and why).
        """
        from app.core.manifest import find_model

        folder = self.settings.models_path()
        self.crown_model = self.seg_model = None
        self.model_errors = []
        self._models_checked = None
        chosen = {"crown": self.settings.crown_model, "segmentation": self.settings.seg_model}
        for kind in ("crown", "segmentation"):
            try:
                spec = find_model(None, kind, folder, preferred=chosen[kind] or None)
            except CrownscanError as exc:
                self.model_errors.append(str(exc))
                continue
            if kind == "crown":
                self.crown_model = spec
            else:
                self.seg_model = spec
        names = [
            f"{m.name.split('(')[0].strip()} v{m.version}"
            for m in (self.crown_model, self.seg_model)
            if m is not None
        ]
        self.models_label.setText("Models: " + (" · ".join(names) if names else "none"))
        tip = [
            f"{m.kind}: {m.name} v{m.version} ({m.manifest_path})"
            for m in (self.crown_model, self.seg_model)
            if m
        ]
        self.models_label.setToolTip("\n".join(tip + self.model_errors))
        if self.model_errors:
            self.models_label.setStyleSheet("color: #e0b84a")
            self.message(self.model_errors[0])
        else:
            self.models_label.setStyleSheet("")
        files = [f for m in (self.crown_model, self.seg_model) if m for f in m.onnx_files]
        pool = self.pool

        def warm(token, progress) -> dict:
            out = {}
            for f in files:
                token.check()
                s = pool.get(f)
                out[str(f)] = (list(s.providers), list(s.notes))
            return out

        if files:
            self.provider_label.setText("Provider: loading…")
            self.provider_label.setToolTip(
                "Creating the inference sessions (a first TensorRT start builds its engines,"
                " which can take minutes)"
            )
            self.runner.submit(Tag("warmup", "", next(self._gens)), warm)
        self._update_actions()

    def models_folder(self) -> Any:
        """Every model of the models folder checked (usable and skipped), once per load."""
        from app.core.model_choice import check_folder

        if self._models_checked is None:
            try:
                self._models_checked = check_folder(self.settings.models_path())
            except CrownscanError as exc:
                self.message(str(exc))
                return None
        return self._models_checked

    def _fill_models_menu(self) -> None:
        """The usable models per kind (checked: in use; choosing one keeps it in the settings)
        and, greyed out, every skipped model with the reason."""
        menu = self.models_menu
        menu.clear()
        found = self.models_folder()
        if found is None:
            menu.addAction("Models folder cannot be read").setEnabled(False)
            return
        current = {"crown": self.crown_model, "segmentation": self.seg_model}
        for kind, title in (("crown", "Crown models"), ("segmentation", "Segmentation models")):
            menu.addSection(title)
            for spec in found.of_kind(kind):
                act = menu.addAction(f"{spec.name} v{spec.version} ({spec.id})")
                act.setCheckable(True)
                act.setChecked(current[kind] is not None and current[kind].id == spec.id)
                act.triggered.connect(lambda _=False, k=kind, i=spec.id: self.choose_model(k, i))
            if not found.of_kind(kind):
                menu.addAction("none usable").setEnabled(False)
        if found.skipped:
            menu.addSection("Skipped")
            for skipped in found.skipped:
                act = menu.addAction(f"{skipped.manifest.name}: {skipped.reason}"[:160])
                act.setToolTip(f"{skipped.manifest}: {skipped.reason}")
                act.setEnabled(False)
            menu.setToolTipsVisible(True)

    def choose_model(self, kind: str, model_id: str) -> None:
        """Use ``model_id`` for ``kind`` from now on (kept in the settings)."""
        if kind == "crown":
            self.settings.crown_model = model_id
        else:
            self.settings.seg_model = model_id
        save_settings(self.settings, self._qsettings)
        self.load_models()

    def _set_providers(self, providers: list[str], notes: list[str]) -> None:
        self.providers, self.provider_notes = providers, notes
        self.provider_label.setText(f"Provider: {provider_label(providers)}")
        tip = [f"in use: {', '.join(PROVIDER_LABELS.get(p, p) for p in providers)}"]
        tip += [f"requested: {', '.join(self.pool.config.preference)}"]
        tip += notes or ["no provider was dropped"]
        self.provider_label.setToolTip("\n".join(tip))

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
        found = cases.discover_cases(folder)
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
            n: cases.case_status(self.cases[n], decisions.get(n), runs.get(n)) for n in self.order
        }
        self.case_list.set_cases([(n, self.statuses[n], self._error_of(n)) for n in self.order])
        self.settings.add_recent(folder)
        save_settings(self.settings, self._qsettings)
        self._fill_recent()
        self._update_counts()
        self.message(f"Opened {folder} ({len(self.order)} cases)")
        self.case_list.setFocus()  # single-letter review keys must not land in the filter box
        if self.order:
            first = next(
                (n for n in self.order if cases.is_pending(self.statuses[n])), self.order[0]
            )
            self.case_list.select(first)
        else:
            self.select_case(None)
        self._update_actions()

    def refresh_workspace(self) -> None:
        """Re-read the folder and the database (new cases, other technicians' decisions)."""
        if self.workspace is None or self._run_tag is not None:
            if self._run_tag is not None:
                self.message("Refresh after the run finishes")
            return
        keep = self.current
        self.open_workspace(self.workspace)
        if keep in self.cases:
            self.case_list.select(keep)

    def _leave_workspace(self) -> None:
        self._queue.clear()
        self.runner.cancel_where(lambda t: t.kind != "warmup")
        self._run_tag = self._view_tag = None
        self._batch.update(total=0, done=0, errors=0, active=False)
        self._set_busy(False)
        self._cache.clear()
        self._invalidated.clear()
        self._drafts.clear()
        self.frames = {}
        self.frame_sources = {}
        self._locate_tag = None
        self._shown = None
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
        return cases.case_status(case, dec, run)

    def _error_of(self, name: str) -> str | None:
        if name in self.transient_errors:
            return self.transient_errors[name]
        if self.store is None or name not in self.cases:
            return None
        if self.statuses.get(name) is not CaseStatus.ERROR:
            return None
        return cases.error_text(self.cases[name], self.store.latest_runs().get(name))

    def _set_status(self, name: str, status: CaseStatus | None = None) -> None:
        """Set (or recompute from the database and outputs) a case's status and show it."""
        if name not in self.cases:
            return
        if status is None:
            status = (
                CaseStatus.ERROR if name in self.transient_errors else self._status_from_disk(name)
            )
        self.statuses[name] = status
        self.case_list.update_case(name, status, self._error_of(name))
        if name == self.current:
            self.qa.show_case(name, status)
            self._show_details()
        self._update_counts()
        self._update_actions()

    def _update_counts(self) -> None:
        counts: dict[CaseStatus, int] = {}
        for s in self.statuses.values():
            counts[s] = counts.get(s, 0) + 1
        parts = [f"{counts[s]} {s.value}" for s in CaseStatus if counts.get(s)]
        text = ", ".join(parts) if parts else "no cases"
        if self._batch["active"]:
            b = self._batch
            text = (
                f"batch {b['done']}/{b['total']}"
                + (f" ({b['errors']} failed)" if b["errors"] else "")
                + " · "
                + text
            )
        self.counts_label.setText(text)

    # ============================================================ selection & view
    def select_case(self, name: str | None) -> None:
        """Show ``name``. Work for the case left (its single run, its load) is cancelled."""
        if name == self.current and name is not None:
            return
        left = self.current
        if left is not None:
            if (
                self._run_tag is not None
                and self._run_tag.case == left
                and not self._batch["active"]
            ):
                self.runner.cancel(self._run_tag)
                self._run_tag = None
                self._set_busy(False)
                self._set_status(left)
                self.last_outcome[left] = "run cancelled"
                self.message(f"Run of {left} cancelled (another case was selected)")
                self.run_finished.emit(left, "cancelled")
            if self._view_tag is not None:
                if self._view_tag.kind == "load":
                    self.runner.cancel(self._view_tag)
                self._view_tag = None
            self._cancel_locate()
        if left is not None:
            self._drafts[left] = self.qa.note.toPlainText()
        self.current = name
        self._shown = None
        if self.case_list.current_name() != name and name is not None:
            self.case_list.blockSignals(True)
            self.case_list.select(name)
            self.case_list.blockSignals(False)
        self.qa.note.setPlainText(self._drafts.get(name, "") if name else "")
        if name is None:
            self.qa.show_case(None, None)
            self.viewer3d.clear()
            self.viewer2d.clear()
            return
        self.qa.show_case(name, self.statuses.get(name))
        self._show_history()
        self._show_details()
        case = self.cases[name]
        cached = self._cache.get(name)
        if cached is not None and cached.stamp == case_stamp(case):
            self._cache.move_to_end(name)
            self._show_view(cached)
            return
        self.viewer3d.clear()
        self.viewer2d.clear("loading…")
        prefetch = next(
            (t for t in self.runner.active() if t.kind == "prefetch" and t.case == name), None
        )
        if prefetch is not None:
            self._view_tag = prefetch
            return
        self._view_tag = Tag("load", name, next(self._gens))
        self.runner.submit(self._view_tag, lambda token, progress: load_case_view(case, token))

    def _show_view(self, view: CaseView) -> None:
        if view.case != self.current:
            return
        prev = self._shown
        keep_camera = prev is not None and prev.case == view.case and prev.crown is not None
        self._shown = view
        self.viewer3d.set_scan(view.scan, reset=False)
        self.viewer3d.set_crown(view.crown)
        self.viewer3d.set_message(
            None if view.scan is not None else "The scan could not be shown: see Details"
        )
        self._show_frame()
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
            self._set_status(view.case, CaseStatus.ERROR)
        elif self.transient_errors.pop(view.case, None) is not None:
            self._set_status(view.case)  # the files were fixed since
        self._show_details()
        self.view_shown.emit(view.case)
        self._prefetch_next()

    # ============================================================ case frame
    def frame_transform(self, name: str) -> FrameTransform | None:
        """The map into the crown model's cube for case ``name`` as its next run will build it
        (from the shown scan and the case frame); None while the scan or model is missing."""
        view = self._shown
        if self.crown_model is None or view is None or view.case != name or view.scan is None:
            return None
        from app.core.crown.frame import make_frame

        return make_frame(
            np.asarray(view.scan.points), self.crown_model.frame, case=self.frames.get(name)
        )

    def case_frame(self, name: str) -> CaseFrame | None:
        """The stored frame of ``name``, else the model's default placed on the shown scan."""
        if name in self.frames:
            return self.frames[name]
        t = self.frame_transform(name)
        return None if t is None else CaseFrame(tuple(float(v) for v in t.center))

    def frame_axes(self, name: str) -> np.ndarray | None:
        """Rows (mesial, buccolingual, occlusal) in scan mm of the frame ``name`` runs with."""
        cf = self.case_frame(name)
        if cf is None or self.crown_model is None:
            return None
        return cf.axes(self.crown_model.frame)

    def _show_frame(self) -> None:
        name = self.current
        t = self.frame_transform(name) if name else None
        axes = self.frame_axes(name) if t is not None else None
        if t is None or axes is None:
            self.viewer3d.set_frame(None)
            self.viewer3d.set_view_axes(None)
            return
        self.viewer3d.set_frame(
            t.corners_mm(), occlusal=axes[2], mesial=axes[0], marked=name in self.frames
        )
        stored = self.frames.get(name)
        turned_frame = stored is not None and stored.occlusal is not None
        self.viewer3d.set_view_axes(axes if turned_frame else None)

    def _apply_frame(self, name: str, frame: CaseFrame | None, source: str, text: str) -> bool:
        """Store ``frame`` for ``name`` (None: back to the model's default), show it, say so."""
        if self.store is None:
            return False
        try:
            self.store.set_frame(name, frame, source)
        except CrownscanError as exc:
            self.message(str(exc))
            return False
        if frame is None:
            self.frames.pop(name, None)
            self.frame_sources.pop(name, None)
        else:
            self.frames[name] = frame
            self.frame_sources[name] = source
        if name == self.current:
            self._show_frame()
            self._show_details()
        self.message(text)
        return True

    def set_centre(self, point: tuple[float, float, float] | None) -> None:
        """Centre the case frame on ``point`` (mm, picked on the preparation) and propose its
        directions there in a worker; None goes back to the model's default frame."""
        name = self.current
        if name is None or self.store is None:
            return
        if point is None:
            self.clear_frame()
            return
        self._cancel_locate()
        centre = tuple(float(v) for v in point)
        x, y, z = centre
        text = f"{name}: centre picked at ({x:.1f}, {y:.1f}, {z:.1f}) mm; proposing the frame…"
        if self._apply_frame(name, CaseFrame(centre), "picked", text):
            self._start_locate(name, "propose", centre)

    def clear_frame(self) -> None:
        """Forget the current case's frame: its runs use the model's default frame again."""
        name = self.current
        if name is None:
            return
        self._cancel_locate()
        self._apply_frame(name, None, "default", f"{name}: case frame back to the model's default")

    def find_preparation(self) -> None:
        """Look for the preparation on the whole scan (no click) in a worker."""
        name = self.current
        if name is not None and self._start_locate(name, "find"):
            self.message(f"{name}: looking for the preparation…")

    def _start_locate(
        self, name: str, kind: str, point: tuple[float, float, float] | None = None
    ) -> bool:
        view = self._shown
        if view is None or view.case != name or view.scan is None:
            self.message(f"{name}: the scan is not shown yet")
            return False
        vertices, faces = scan_arrays(view.scan)
        self._cancel_locate()
        self._locate_tag = Tag(kind, name, next(self._gens))

        def job(token, progress):
            import importlib

            locate = importlib.import_module("app.core.crown.locate")
            try:
                if point is None:
                    return locate.find_preparation(vertices, faces)
                return locate.propose_frame(vertices, faces, point)
            except locate.LocateError as exc:
                return LocateProblem(str(exc))

        self.runner.submit(self._locate_tag, job)
        return True

    def _cancel_locate(self) -> None:
        self._run_after_locate = None
        if self._locate_tag is not None:
            self.runner.cancel(self._locate_tag)
            self._locate_tag = None

    def _on_located(self, tag: Tag, result: Any) -> None:
        if tag != self._locate_tag or tag.case != self.current:
            return
        self._locate_tag = None
        name = tag.case
        if isinstance(result, LocateProblem) or not isinstance(result, CaseFrame):
            what = "propose the frame" if tag.kind == "propose" else "find the preparation"
            why = result.text if isinstance(result, LocateProblem) else "no frame came back"
            self._locate_failed(tag, f"could not {what}: {why}")
            return
        source = "proposed" if tag.kind == "propose" else "found"
        o = vec_text(result.occlusal) if result.occlusal is not None else "(model's axis)"
        text = f"{name}: frame {FRAME_SOURCES[source]}, occlusal {o}; check it, then run"
        self._apply_frame(name, result, source, text)
        self.frame_located.emit(name, source)
        self._run_if_waiting(name)

    def _locate_failed(self, tag: Tag, text: str) -> None:
        kept = "the picked centre is kept" if tag.kind == "propose" else "the frame is unchanged"
        self.last_outcome[tag.case] = f"{text} ({kept})"
        self.message(f"{tag.case}: {text}; {kept}")
        self._show_details()
        self.frame_located.emit(tag.case, "problem")
        self._run_if_waiting(tag.case)

    def flip_occlusal(self) -> None:
        """Turn the frame upside down: the occlusal direction points the other way."""
        self._adjust("occlusal direction flipped", lambda f, m: f.flipped(m))

    def turn_frame(self, degrees: float) -> None:
        """Turn the box about the occlusal axis (positive: counter-clockwise seen from above)."""
        self._adjust(
            f"box turned {degrees:+g}° about the occlusal axis", lambda f, m: f.turned(m, degrees)
        )

    def align_occlusal_to_view(self) -> None:
        """Occlusal := towards the camera, for a view looking down onto the occlusal surface."""
        d = self.viewer3d.view_direction()
        self._adjust("occlusal aligned to the view", lambda f, m: f.with_occlusal(m, d))

    def _adjust(self, what: str, change: Callable[[CaseFrame, Frame], CaseFrame]) -> None:
        """Replace the current case's frame by ``change(frame, model_frame)``."""
        name = self.current
        frame = self.case_frame(name) if name is not None else None
        if name is None or frame is None or self.crown_model is None:
            if name is not None:
                self.message(f"{name}: no frame to adjust (no scan shown or no crown model)")
            return
        self._cancel_locate()
        new = change(frame, self.crown_model.frame)
        base = self.frame_sources.get(name, "default").removesuffix("+adjusted")
        text = f"{name}: {what}; occlusal {vec_text(new.occlusal)}; run again"
        self._apply_frame(name, new, base + "+adjusted", text)

    def _frame_rows(self, name: str) -> list[tuple[str, str]]:
        """Details rows: where the frame came from, its centre and its directions."""
        stored = name in self.frames
        if not stored and self.crown_model is None:
            return []
        source = self.frame_sources.get(name, "given" if stored else "default")
        base, _, adjusted = source.partition("+")
        label = FRAME_SOURCES.get(base, base) + (", adjusted by hand" if adjusted else "")
        if base == "default":
            label += " (scan bounding box, model's axes)"
        rows = [("Case frame", label)]
        cf = self.case_frame(name)
        if cf is not None:
            x, y, z = cf.center
            rows.append(("Frame centre", f"({x:.1f}, {y:.1f}, {z:.1f}) mm"))
        axes = self.frame_axes(name)
        if axes is not None:
            rows += [("Occlusal", vec_text(axes[2])), ("Mesio-distal", vec_text(axes[0]))]
        return rows

    def _prefetch_next(self) -> None:
        """Load the next pending case's scan and images while the technician reviews this one."""
        nxt = self._neighbour(+1, pending_only=True)
        if nxt is None or nxt in self._cache:
            return
        if any(t.case == nxt and t.kind in ("prefetch", "load") for t in self.runner.active()):
            return
        case = self.cases[nxt]
        self.runner.submit(
            Tag("prefetch", nxt, next(self._gens)),
            lambda token, progress: load_case_view(case, token),
        )

    def _remember(self, view: CaseView) -> None:
        self._cache[view.case] = view
        self._cache.move_to_end(view.case)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def _show_history(self) -> None:
        if self.store is None or self.current is None:
            return
        records = self.store.history(self.current)
        self.qa.show_history(records)
        self.qa.show_saved(records[-1] if records else None)

    def _show_details(self) -> None:
        name = self.current
        if name is None or name not in self.cases:
            self.qa.show_details([], None)
            return
        case = self.cases[name]
        rows = [
            ("Status", self.statuses.get(name, CaseStatus.NEW).value),
            ("Folder", str(case.folder)),
            ("Scan", case.scan.name if case.scan else "—"),
            ("Images", ", ".join(p.name for p in case.images) or "—"),
        ]
        info = (
            self._shown.run_info if self._shown is not None and self._shown.case == name else None
        )
        if info:
            rows.append(("Last run", str(info.get("time", "")).replace("T", " ")[:19]))
            rows.append(
                (
                    "Models",
                    f"{info.get('crown_model')} v{info.get('crown_version')}, "
                    f"{info.get('seg_model')} v{info.get('seg_version')}",
                )
            )
            rows.append(("Providers", ", ".join(info.get("providers", []))))
            crown = info.get("crown") or {}
            if crown:
                rows.append(("Crown", f"{crown.get('faces')} triangles"))
            timings = info.get("timings_ms") or {}
            total = sum(v for v in timings.values() if isinstance(v, int | float))
            if timings:
                rows.append(("Run time", f"{total / 1000:.1f} s"))
        if case.crown_path.is_file():
            rows.append(("Output", str(case.output_dir)))
        rows += self._frame_rows(name)
        outcome = self.last_outcome.get(name)
        if outcome:
            rows.append(("This session", outcome))
        notes = [f"Check the crown: {w}" for w in (info or {}).get("warnings") or []]
        notes += [
            f"The model does not match its manifest: {w}"
            for w in (info or {}).get("model_lint") or []
        ]
        shown = self._shown if self._shown is not None and self._shown.case == name else None
        if self.store is not None and shown is not None and shown.input_hash:
            latest = self.store.latest_decisions().get(name)
            rows.append(("Inputs sha256", shown.input_hash[:16] + "…"))
            if latest is not None and latest.input_hash and latest.input_hash != shown.input_hash:
                notes.insert(
                    0,
                    f"The input files changed after the last decision ({latest.decision.value},"
                    f" {latest.time[:19].replace('T', ' ')}): that decision judged other inputs.",
                )
            run_hash = (info or {}).get("input_hash")
            if run_hash and run_hash != shown.input_hash:
                notes.insert(0, STALE_RESULT)
        self.qa.show_details(rows, self._error_of(name), notes)

    # ============================================================ runs
    def _run_fn(self, case: Case):
        crown_model, seg_model, pool, s = self.crown_model, self.seg_model, self.pool, self.settings
        cached = self._cache.get(case.name)
        scan_poly = cached.scan if cached is not None else None
        case_frame = self.frames.get(case.name)
        frame_source = self.frame_sources.get(case.name, "given")
        smoothing = None
        if s.smoothing != "model":
            from app.core.manifest import Smoothing

            smoothing = Smoothing(s.smoothing, s.smoothing_iterations)

        def job(token, progress):
            result = cases.run_case(
                case,
                crown_model,
                seg_model,
                pool,
                resolution=s.resolution_or_none(),
                roi=s.roi_flag(),
                smoothing=smoothing,
                case_frame=case_frame,
                frame_source=frame_source,
                overlay_alpha=s.overlay_opacity,
                cancel=token,
                progress=progress,
            )
            return result, view_from_result(result, scan_poly, case)

        return job

    def _can_run(self, name: str | None) -> bool:
        return (
            name is not None
            and self.crown_model is not None
            and name in self.cases
            and self.cases[name].problem is None
        )

    def confirm_rerun(self, name: str) -> bool:
        """Ask before a run replaces the outputs a QA decision judged; True to go on."""
        assert self.store is not None
        decision = self.store.latest_decisions().get(name)
        if decision is None:
            return True
        when = decision.time.replace("T", " ")[:19]
        answer = QtWidgets.QMessageBox.question(
            self,
            "Re-run a decided case?",
            f"{name} was {decision.decision.value} by {decision.user} on {when} UTC.\n\n"
            "Re-running replaces the crown and masks that decision judged. The decision will "
            "be kept in the history, marked as superseded, and the case will need a new "
            "decision.",
            QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
            QtWidgets.QMessageBox.StandardButton.No,
        )
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

    def run_current(self) -> None:
        """Run the selected case (crown + segmentation), unless something is already running.

        A case with a current QA decision is re-run only after the technician confirms it.
        """
        name = self.current
        if self._run_tag is not None or not self._can_run(name):
            if self.crown_model is None:
                self.message("No crown model: " + "; ".join(self.model_errors))
            return
        if self.store is not None and not self.confirm_rerun(name):
            self.message(f"{name}: not re-run; its decision stands")
            return
        if self._locate_tag is not None and self._locate_tag.case == name:
            # the run must use the frame being proposed, not the bare picked centre
            self._run_after_locate = name
            self.message(f"{name}: the run starts once the frame is proposed…")
            return
        self._start_run(name)

    def _run_if_waiting(self, name: str) -> None:
        if self._run_after_locate == name:
            self._run_after_locate = None
            self.run_current()

    def _start_run(self, name: str) -> None:
        case = self.cases[name]
        self._run_tag = Tag("run", name, next(self._gens))
        self.transient_errors.pop(name, None)
        self._set_status(name, CaseStatus.RUNNING)
        self._set_busy(True, f"{name}: starting")
        self.runner.submit(self._run_tag, self._run_fn(case))

    def run_all_pending(self) -> None:
        """Queue every new case of the workspace and run them one after another."""
        if self._run_tag is not None or self.crown_model is None:
            return
        self._queue = [
            n for n in self.order if self.statuses[n] is CaseStatus.NEW and self._can_run(n)
        ]
        if not self._queue:
            self.message("Nothing pending to run")
            return
        self._batch.update(total=len(self._queue), done=0, errors=0, active=True)
        self._next_in_queue()

    def _next_in_queue(self) -> None:
        while self._queue:
            name = self._queue.pop(0)
            if name in self.cases and self.statuses.get(name) is CaseStatus.NEW:
                self._start_run(name)
                self._update_counts()
                return
        if self._batch["active"]:
            b = self._batch
            self.message(f"Batch finished: {b['done']} run, {b['errors']} failed")
            self._batch["active"] = False
        self._set_busy(False)
        self._update_counts()

    def cancel_runs(self) -> None:
        """Stop the running case (between batches) and the rest of the queue."""
        self._queue.clear()
        self._batch["active"] = False
        tag = self._run_tag
        if tag is None:
            return
        self.runner.cancel(tag)
        self._run_tag = None
        self._set_status(tag.case)
        self._set_busy(False)
        self.last_outcome[tag.case] = "run cancelled"
        self.message(f"Run of {tag.case} cancelled; the case is as it was")
        self.run_finished.emit(tag.case, "cancelled")

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress.setValue(0)
            self.progress.setFormat(text)
        else:
            self.progress.setValue(0)
            self.progress.setFormat("")
        self._update_actions()

    def _update_actions(self) -> None:
        idle = self._run_tag is None
        can = self._can_run(self.current)
        self.run_button.setEnabled(idle and can)
        self.run_all_button.setEnabled(idle and self.crown_model is not None and bool(self.order))
        if hasattr(self, "act_run"):
            self.act_run.setEnabled(idle and can)
            self.act_run_all.setEnabled(self.run_all_button.isEnabled())

    # ============================================================ worker signals
    def _on_progress(self, tag: Tag, stage: str, fraction: float) -> None:
        if tag == self._run_tag:
            self.progress.setValue(int(1000 * fraction))
            prefix = ""
            if self._batch["active"]:
                prefix = f"[{self._batch['done'] + 1}/{self._batch['total']}] "
            self.progress.setFormat(f"{prefix}{tag.case}: {stage} %p%")

    def _on_done(self, tag: Tag, result: Any) -> None:
        if tag.kind == "warmup":
            providers: list[str] = []
            notes: list[str] = []
            for p, n in result.values():
                providers += [x for x in p if x not in providers]
                notes += [x for x in n if x not in notes]
            self._set_providers(providers, notes)
            dropped = [x for x in notes if ": could not be initialised" in x]
            if dropped and providers and providers[0] != self.pool.config.preference[0]:
                self.message(f"Running on {provider_label(providers)}: {dropped[0]}")
                logging.getLogger("crownscan").warning("provider notes: %s", "; ".join(notes))
            self.models_ready.emit()
        elif tag.kind in LOCATE_KINDS:
            self._on_located(tag, result)
        elif tag.kind in ("load", "prefetch"):
            view: CaseView = result
            if tag.case in self.cases and tag.gen > self._invalidated.get(tag.case, 0):
                self._remember(view)
            if tag == self._view_tag and tag.case == self.current:
                self._view_tag = None
                self._show_view(view)
        elif tag.kind == "run" and tag == self._run_tag:
            self._run_tag = None
            case_result, view = result
            self._record_run(tag.case, "generated")
            if tag.case == self.current:
                self._show_history()  # its decision, if any, is now superseded
            self.transient_errors.pop(tag.case, None)
            self._invalidated[tag.case] = tag.gen
            self.runner.cancel_where(
                lambda t: t.case == tag.case and t.kind in ("load", "prefetch")
            )
            if self._view_tag is not None and self._view_tag.case == tag.case:
                self._view_tag = None
            self._remember(view)
            self._set_status(tag.case)
            self._set_providers(case_result.providers, self.provider_notes)
            secs = sum(case_result.report.timings_ms.values()) / 1000
            warnings = case_result.crown.warnings
            checks = f", {len(warnings)} crown check(s) to look at" if warnings else ""
            self.last_outcome[tag.case] = f"generated in {secs:.1f} s{checks}"
            self.message(
                f"{tag.case}: generated ({len(case_result.written)} files written){checks}"
                + (f": {warnings[0]}" if warnings else "")
            )
            if tag.case == self.current:
                self._view_tag = None
                self._show_view(view)
            self._after_run(tag, "generated")

    def _on_failed(self, tag: Tag, exc: object, tb: str) -> None:
        text = (
            str(exc)
            if isinstance(exc, CrownscanError)
            else f"internal error: {type(exc).__name__}: {exc}"
        )
        if tag.kind == "warmup":
            self.provider_label.setText("Provider: unavailable")
            self.provider_label.setToolTip(text)
            self.model_errors.append(text)
            self.message(text)
            self.models_ready.emit()
        elif tag.kind in LOCATE_KINDS and tag == self._locate_tag:
            self._locate_tag = None
            logging.getLogger("crownscan").error("locating on %s failed:\n%s", tag.case, tb)
            self._locate_failed(tag, text)
        elif tag.kind in ("load", "prefetch"):
            if tag == self._view_tag:
                self._view_tag = None
                self.viewer2d.clear(text)
                self.transient_errors[tag.case] = text
                self._set_status(tag.case, CaseStatus.ERROR)
        elif tag.kind == "run" and tag == self._run_tag:
            self._run_tag = None
            self._record_run(tag.case, "error", text)
            self.transient_errors.pop(tag.case, None)
            self._set_status(tag.case)
            self.last_outcome[tag.case] = "run failed"
            self.message(f"{tag.case}: {text}")
            if not isinstance(exc, CrownscanError):
                logging.getLogger("crownscan").error("run of %s failed:\n%s", tag.case, tb)
            self._after_run(tag, "error")

    def _record_run(self, name: str, outcome: str, text: str = "") -> None:
        """Store a run's outcome (superseding the case's decision when it generated); a
        database that refuses is said in the status bar and a message box, not raised."""
        if self.store is None:
            return
        try:
            self.store.record_run(name, outcome, text)
        except CrownscanError as exc:
            self.message(f"{name}: run outcome not saved: {exc}")
            QtWidgets.QMessageBox.warning(self, "Run outcome not saved", str(exc))

    def _on_cancelled(self, tag: Tag) -> None:
        if tag.kind == "run" and tag == self._run_tag:
            self._run_tag = None
            self._set_status(tag.case)
            self._after_run(tag, "cancelled")

    def _after_run(self, tag: Tag, outcome: str) -> None:
        if self._batch["active"]:
            self._batch["done"] += 1
            if outcome == "error":
                self._batch["errors"] += 1
        self._set_busy(False)
        self.run_finished.emit(tag.case, outcome)
        if self._batch["active"]:
            self._next_in_queue()
        self._update_counts()

    # ============================================================ QA
    def decide(self, decision: Decision, note: str = "") -> QaRecord | None:
        """Store a decision for the selected case; the UI says "saved" only after the commit."""
        name = self.current
        if name is None or self.store is None:
            return None
        status = self.statuses.get(name)
        if status not in (
            CaseStatus.GENERATED,
            CaseStatus.APPROVED,
            CaseStatus.REJECTED,
            CaseStatus.NEEDS_REWORK,
        ):
            self.message(f"{name}: run the case before judging it")
            return None
        case = self.cases[name]
        info = (
            (self._shown.run_info if self._shown is not None and self._shown.case == name else None)
            or cases.read_run_info(case)
            or {}
        )
        try:
            now_hash = cases.input_hash(case)
        except CrownscanError as exc:
            self.message(f"{name}: {exc}")
            return None
        run_hash = str(info.get("input_hash") or "")
        if (
            decision is Decision.APPROVED
            and run_hash
            and run_hash != now_hash
            and not self.confirm_stale_approval(name)
        ):
            self.message(f"{name}: not approved (its inputs changed since the run)")
            return None
        try:
            record = self.store.record_decision(
                QaRecord(
                    case=name,
                    decision=decision,
                    note=note,
                    crown_model=str(
                        info.get("crown_model") or (self.crown_model.id if self.crown_model else "")
                    ),
                    crown_version=str(
                        info.get("crown_version")
                        or (self.crown_model.version if self.crown_model else "")
                    ),
                    seg_model=str(
                        info.get("seg_model") or (self.seg_model.id if self.seg_model else "")
                    ),
                    seg_version=str(
                        info.get("seg_version")
                        or (self.seg_model.version if self.seg_model else "")
                    ),
                    provider=",".join(info.get("providers") or self.providers),
                    input_hash=now_hash,
                    run_input_hash=run_hash,
                )
            )
        except CrownscanError as exc:
            self.qa.saved_label.setText(f"NOT saved: {exc}")
            QtWidgets.QMessageBox.critical(self, "Decision not saved", str(exc))
            return None
        self._set_status(name)
        self._show_history()
        self.qa.clear_note()
        self._drafts.pop(name, None)
        self.message(f"{name}: {decision.value} — saved")
        return record

    def confirm_stale_approval(self, name: str) -> bool:
        """Ask before approving a result made from inputs that have changed since its run."""
        answer = QtWidgets.QMessageBox.warning(
            self,
            "Inputs changed since the run",
            f"{name}: {STALE_RESULT}\n\nApprove this result anyway?",
            QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
            QtWidgets.QMessageBox.StandardButton.No,
        )
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

    def _neighbour(self, step: int, pending_only: bool) -> str | None:
        if not self.order:
            return None
        start = self.order.index(self.current) if self.current in self.order else -1
        n = len(self.order)
        for k in range(1, n + 1):
            idx = start + step * k
            if not pending_only and not 0 <= idx < n:
                return None
            name = self.order[idx % n]
            if name == self.current:
                return None
            if not pending_only or cases.is_pending(self.statuses[name]):
                return name
        return None

    def next_pending(self) -> None:
        nxt = self._neighbour(+1, pending_only=True)
        if nxt is None:
            self.message("No other pending case")
            return
        self.case_list.select(nxt)

    def previous_case(self) -> None:
        prev = self._neighbour(-1, pending_only=False)
        if prev is not None:
            self.case_list.select(prev)

    def ask_export_report(self) -> None:
        if self.store is None:
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export QA report", str(self.workspace / "qa-report.csv"), "CSV (*.csv)"
        )
        if path:
            self.export_report(path)

    def export_report(self, path: str | Path) -> int:
        """Write the QA report (current decisions) and its history file beside it."""
        assert self.store is not None
        try:
            n = self.store.export_csv(path)
        except (CrownscanError, OSError) as exc:
            QtWidgets.QMessageBox.warning(self, "QA report not written", str(exc))
            self.message(f"QA report not written: {exc}")
            return -1
        history = cases.history_csv_path(Path(path)).name
        self.message(f"QA report written: {path} ({n} cases; full history in {history})")
        return n

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
        save_settings(new, self._qsettings)
        self.viewer2d.set_overlay_defaults(new.overlay_opacity, new.overlay_mode)
        keys = ("providers", "cpu_threads", "models_dir", "server", "server_fallback")
        if any(getattr(old, k) != getattr(new, k) for k in keys):
            self.pool = new.session_pool()
            self.load_models()

    def open_output_folder(self) -> None:
        if self.current is None:
            return
        folder = self.cases[self.current].output_dir
        if not folder.is_dir():
            self.message(f"{self.current}: no outputs yet")
            return
        QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(folder)))

    def about_text(self) -> str:
        """Versions, models, providers and folders: what support asks for first."""
        import onnxruntime

        from app import __version__
        from app.core.logfile import current_log_file
        from app.core.paths import user_cache_dir
        from app.core.runtime import available_providers

        lines = [
            f"Crownscan {__version__}",
            f"ONNX Runtime {onnxruntime.__version__}; providers in this build: "
            + ", ".join(PROVIDER_LABELS.get(p, p) for p in available_providers()),
            f"Provider preference: {', '.join(self.pool.config.preference)}; in use: "
            + (", ".join(PROVIDER_LABELS.get(p, p) for p in self.providers) or "not yet loaded"),
        ]
        lines += [f"Note: {n}" for n in self.provider_notes]
        for m in (self.crown_model, self.seg_model):
            if m is not None:
                lines.append(f"{m.kind} model: {m.name} v{m.version} ({m.manifest_path})")
        lines += self.model_errors
        lines.append(f"Models folder: {self.settings.models_path()}")
        lines.append(f"Workspace: {self.workspace or '—'}")
        lines.append(f"Settings: {self._qsettings.fileName()}")
        lines.append(f"Log: {current_log_file() or 'not written'}")
        lines.append(f"Cache: {user_cache_dir()}")
        return "\n".join(lines)

    def show_about(self) -> None:
        QtWidgets.QMessageBox.about(self, "About Crownscan", self.about_text())

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
            dpr = image.devicePixelRatio() or 1.0
            pos = plot.mapTo(self, QtCore.QPoint(0, 0))
            target = QtCore.QRectF(pos.x(), pos.y(), plot.width(), plot.height())
            painter = QtGui.QPainter(image)
            painter.drawImage(target, shot)
            painter.end()
            del dpr
        return image

    def save_screenshot(self, path: str | Path) -> None:
        from app.core.fileio import atomic_write

        image = self.grab_window()

        def write(tmp: Path) -> None:
            if not image.save(str(tmp), "PNG"):
                raise CrownscanError(path, "cannot write the screenshot")

        atomic_write(Path(path), write)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt name)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Cancel all work, wait for the workers, close the plotter and the database (once)."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self.runner.shutdown()
        self._cache.clear()
        self._shown = None
        self.viewer3d.shutdown()
        if self.store is not None:
            self.store.close()
            self.store = None


__all__ = ["MainWindow", "provider_label"]
