"""QA decisions for the window: decide, walk the cases, show the history, export the report.

Every decision is committed to the workspace's QA database before the window says "saved";
drafts of notes are kept per case while the technician browses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets

from app.core import case_run
from app.core.errors import CrownscanError
from app.core.qa_store import Decision, QaRecord, history_csv_path
from app.core.workspace import CaseStatus, input_hash, is_pending

from .details import STALE_RESULT

if TYPE_CHECKING:
    from .main_window import MainWindow


class QaController(QtCore.QObject):
    """Records the technician's decisions and moves between cases to review."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.win = window
        self.drafts: dict[str, str] = {}

    def decide(self, decision: Decision, note: str = "") -> QaRecord | None:
        """Store a decision for the selected case; the UI says "saved" only after the commit."""
        name = self.win.current
        if name is None or self.win.store is None:
            return None
        status = self.win.statuses.get(name)
        if status not in (
            CaseStatus.GENERATED,
            CaseStatus.APPROVED,
            CaseStatus.REJECTED,
            CaseStatus.NEEDS_REWORK,
        ):
            self.win.message(f"{name}: run the case before judging it")
            return None
        case = self.win.cases[name]
        info = self.win.shown_run_info(name) or case_run.read_run_info(case) or {}
        try:
            now_hash = input_hash(case)
        except CrownscanError as exc:
            self.win.message(f"{name}: {exc}")
            return None
        run_hash = str(info.get("input_hash") or "")
        if (
            decision is Decision.APPROVED
            and run_hash
            and run_hash != now_hash
            and not self.confirm_stale_approval(name)
        ):
            self.win.message(f"{name}: not approved (its inputs changed since the run)")
            return None
        try:
            record = self.win.store.record_decision(
                QaRecord(
                    case=name,
                    decision=decision,
                    note=note,
                    crown_model=str(
                        info.get("crown_model")
                        or (self.win.crown_model.id if self.win.crown_model else "")
                    ),
                    crown_version=str(
                        info.get("crown_version")
                        or (self.win.crown_model.version if self.win.crown_model else "")
                    ),
                    seg_model=str(
                        info.get("seg_model")
                        or (self.win.seg_model.id if self.win.seg_model else "")
                    ),
                    seg_version=str(
                        info.get("seg_version")
                        or (self.win.seg_model.version if self.win.seg_model else "")
                    ),
                    provider=",".join(info.get("providers") or self.win.providers),
                    input_hash=now_hash,
                    run_input_hash=run_hash,
                )
            )
        except CrownscanError as exc:
            self.win.qa.saved_label.setText(f"NOT saved: {exc}")
            QtWidgets.QMessageBox.critical(self.win, "Decision not saved", str(exc))
            return None
        self.win.set_status(name)
        self.show_history()
        self.win.qa.clear_note()
        self.drafts.pop(name, None)
        self.win.message(f"{name}: {decision.value} — saved")
        return record

    def confirm_stale_approval(self, name: str) -> bool:
        """Ask before approving a result made from inputs that have changed since its run."""
        answer = QtWidgets.QMessageBox.warning(
            self.win,
            "Inputs changed since the run",
            f"{name}: {STALE_RESULT}\n\nApprove this result anyway?",
            QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
            QtWidgets.QMessageBox.StandardButton.No,
        )
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

    def neighbour(self, step: int, pending_only: bool) -> str | None:
        """The case ``step`` places along the list (wrapping round to pending ones only)."""
        if not self.win.order:
            return None
        start = self.win.order.index(self.win.current) if self.win.current in self.win.order else -1
        n = len(self.win.order)
        for k in range(1, n + 1):
            idx = start + step * k
            if not pending_only and not 0 <= idx < n:
                return None
            name = self.win.order[idx % n]
            if name == self.win.current:
                return None
            if not pending_only or is_pending(self.win.statuses[name]):
                return name
        return None

    def next_pending(self) -> None:
        nxt = self.neighbour(+1, pending_only=True)
        if nxt is None:
            self.win.message("No other pending case")
            return
        self.win.case_list.select(nxt)

    def previous_case(self) -> None:
        prev = self.neighbour(-1, pending_only=False)
        if prev is not None:
            self.win.case_list.select(prev)

    def ask_export_report(self) -> None:
        if self.win.store is None:
            return
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self.win, "Export QA report", str(self.win.workspace / "qa-report.csv"), "CSV (*.csv)"
        )
        if path:
            self.export_report(path)

    def export_report(self, path: str | Path) -> int:
        """Write the QA report (current decisions) and its history file beside it."""
        assert self.win.store is not None
        try:
            n = self.win.store.export_csv(path)
        except (CrownscanError, OSError) as exc:
            QtWidgets.QMessageBox.warning(self.win, "QA report not written", str(exc))
            self.win.message(f"QA report not written: {exc}")
            return -1
        history = history_csv_path(Path(path)).name
        self.win.message(f"QA report written: {path} ({n} cases; full history in {history})")
        return n

    def show_history(self) -> None:
        """Show the shown case's decisions and its latest saved one in the QA pane."""
        if self.win.store is None or self.win.current is None:
            return
        records = self.win.store.history(self.win.current)
        self.win.qa.show_history(records)
        self.win.qa.show_saved(records[-1] if records else None)


__all__ = ["QaController"]
