"""The QA pane: decision buttons, a note, navigation, the saved state and the case details."""

from __future__ import annotations

import html

from PySide6 import QtCore, QtWidgets

from app.core.qa_store import Decision, QaRecord
from app.core.workspace import CaseStatus

from .case_list import STATUS_COLORS


class QaPanel(QtWidgets.QWidget):
    """Emits ``decided(Decision, note)``, ``next_pending()``, ``previous()``.

    Keyboard shortcuts live on the window's actions; the buttons show them.
    """

    decided = QtCore.Signal(object, str)
    next_pending = QtCore.Signal()
    previous = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QtWidgets.QLabel("No case")
        self.title.setObjectName("caseTitle")
        self.status_label = QtWidgets.QLabel("")
        self.status_label.setObjectName("caseStatus")

        self.approve = QtWidgets.QPushButton("Approve  (A)")
        self.approve.setObjectName("approveButton")
        self.reject = QtWidgets.QPushButton("Reject  (R)")
        self.reject.setObjectName("rejectButton")
        self.rework = QtWidgets.QPushButton("Needs rework  (W)")
        self.rework.setObjectName("reworkButton")
        for b, d in (
            (self.approve, Decision.APPROVED),
            (self.reject, Decision.REJECTED),
            (self.rework, Decision.NEEDS_REWORK),
        ):
            b.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _=False, d=d: self.decide(d))

        self.note = QtWidgets.QPlainTextEdit()
        self.note.setPlaceholderText("Note for this decision (optional)")
        self.note.setMaximumHeight(80)
        self.saved_label = QtWidgets.QLabel("")
        self.saved_label.setObjectName("savedLabel")
        self.saved_label.setWordWrap(True)

        self.prev_button = QtWidgets.QPushButton("◀ Previous  (P)")
        self.next_button = QtWidgets.QPushButton("Next pending  (N) ▶")
        for b in (self.prev_button, self.next_button):
            b.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.prev_button.clicked.connect(self.previous.emit)
        self.next_button.clicked.connect(self.next_pending.emit)

        self.history = QtWidgets.QListWidget()
        self.history.setMaximumHeight(110)
        self.history.setWordWrap(True)
        self.history.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.details = QtWidgets.QTextBrowser()
        self.details.setObjectName("details")
        self.details.setOpenExternalLinks(False)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.title)
        lay.addWidget(self.status_label)
        decide = QtWidgets.QGridLayout()
        decide.addWidget(self.approve, 0, 0, 1, 2)
        decide.addWidget(self.reject, 1, 0)
        decide.addWidget(self.rework, 1, 1)
        lay.addLayout(decide)
        lay.addWidget(self.note)
        lay.addWidget(self.saved_label)
        nav = QtWidgets.QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        lay.addLayout(nav)
        lay.addWidget(QtWidgets.QLabel("Decisions"))
        lay.addWidget(self.history)
        lay.addWidget(QtWidgets.QLabel("Details"))
        lay.addWidget(self.details, 1)
        self.set_enabled_for(None)

    def decide(self, decision: Decision) -> None:
        if self.approve.isEnabled():
            self.decided.emit(decision, self.note.toPlainText().strip())

    def set_enabled_for(self, status: CaseStatus | None) -> None:
        ok = status in (
            CaseStatus.GENERATED,
            CaseStatus.APPROVED,
            CaseStatus.REJECTED,
            CaseStatus.NEEDS_REWORK,
        )
        for b in (self.approve, self.reject, self.rework):
            b.setEnabled(ok)
        tip = "" if ok else "Run the case first: only generated results can be judged"
        for b in (self.approve, self.reject, self.rework):
            b.setToolTip(tip)

    def show_case(self, name: str | None, status: CaseStatus | None) -> None:
        self.title.setText(name or "No case")
        if status is None:
            self.status_label.setText("")
        else:
            self.status_label.setText(
                f"<span style='color:{STATUS_COLORS[status]}'>●</span> {status.value}"
            )
        self.set_enabled_for(status)

    def show_history(self, records: list[QaRecord]) -> None:
        self.history.clear()
        if not records:
            item = QtWidgets.QListWidgetItem("no decision yet")
            item.setFlags(QtCore.Qt.ItemFlag.NoItemFlags)
            self.history.addItem(item)
            return
        for r in reversed(records):
            when = r.time.replace("T", " ")[:19]
            text = f"{when}  {r.decision.value}  by {r.user}"
            if r.superseded:
                text += "  (superseded by a re-run)"
            if r.inputs_changed_since_run:
                text += " (inputs changed since the run)"
            if r.note:
                text += f" — {r.note}"
            item = QtWidgets.QListWidgetItem(text)
            item.setToolTip(
                f"{r.decision.value} by {r.user} at {r.time}\nmodel {r.crown_model} v"
                f"{r.crown_version}, {r.seg_model} v{r.seg_version}\nprovider {r.provider}\n"
                f"inputs sha256 {r.input_hash}\nrun made from {r.run_input_hash or 'unknown'}\n"
                f"{r.note}"
            )
            self.history.addItem(item)

    def show_saved(self, record: QaRecord | None) -> None:
        if record is None:
            self.saved_label.setText("")
            return
        when = record.time.replace("T", " ")[:19]
        if record.superseded:
            rerun = record.superseded.replace("T", " ")[:19]
            self.saved_label.setText(
                f"Superseded: {record.decision.value} by {record.user}, {when} UTC, judged "
                f"outputs replaced by the run of {rerun} UTC; decide again"
            )
            return
        self.saved_label.setText(f"Saved: {record.decision.value} by {record.user}, {when} UTC")

    def show_details(
        self, rows: list[tuple[str, str]], error: str | None, notes: list[str] | None = None
    ) -> None:
        """The case's facts as a table, after its error and any notes worth a look."""
        parts = []
        if error:
            parts.append(f"<p style='color:#ff6b61'><b>Error:</b> {html.escape(error)}</p>")
        for note in notes or []:
            parts.append(f"<p style='color:#e0b84a'><b>Note:</b> {html.escape(note)}</p>")
        parts.append("<table cellspacing='2'>")
        for k, v in rows:
            parts.append(
                f"<tr><td style='color:#9aa3ad;padding-right:6px'>{html.escape(k)}</td>"
                f"<td>{html.escape(v)}</td></tr>"
            )
        parts.append("</table>")
        self.details.setHtml("".join(parts))

    def clear_note(self) -> None:
        self.note.clear()
