"""Run scheduling for the window: one case at a time, a queue for "Run all", cancel, progress.

The controller owns the running task's tag, the queue and the batch counters; the window owns
the cases, their statuses and the panels, and shows what a run produced.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtWidgets

from app.core import case_run
from app.core.errors import CrownscanError
from app.core.workspace import Case, CaseStatus

from .case_view import view_from_result
from .workers import Tag, failure_text

if TYPE_CHECKING:
    from .main_window import MainWindow


class RunController(QtCore.QObject):
    """Starts, queues and cancels runs of the window's cases and records their outcomes."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.win = window
        self.tag: Tag | None = None
        self.queue: list[str] = []
        self.batch = {"total": 0, "done": 0, "errors": 0, "active": False}
        self.after_locate: str | None = None
        window.runner.progress.connect(self._on_progress)
        window.runner.done.connect(self._on_done)
        window.runner.failed.connect(self._on_failed)
        window.runner.cancelled.connect(self._on_cancelled)

    def _run_fn(self, case: Case):
        win = self.win
        crown_model, seg_model, pool, s = win.crown_model, win.seg_model, win.pool, win.settings
        cached = win._cache.get(case.name)
        scan_poly = cached.scan if cached is not None else None
        case_frame = win.frames.get(case.name)
        frame_source = win.frame_sources.get(case.name, "given")
        smoothing = None
        if s.smoothing != "model":
            from app.core.manifest import Smoothing

            smoothing = Smoothing(s.smoothing, s.smoothing_iterations)

        def job(token, progress):
            result = case_run.run_case(
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

    def can_run(self, name: str | None) -> bool:
        win = self.win
        return (
            name is not None
            and win.crown_model is not None
            and name in win.cases
            and win.cases[name].problem is None
        )

    def confirm_rerun(self, name: str) -> bool:
        """Ask before a run replaces the outputs a QA decision judged; True to go on."""
        assert self.win.store is not None
        decision = self.win.store.latest_decisions().get(name)
        if decision is None:
            return True
        when = decision.time.replace("T", " ")[:19]
        answer = QtWidgets.QMessageBox.question(
            self.win,
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
        win = self.win
        name = win.current
        if self.tag is not None or not self.can_run(name):
            if win.crown_model is None:
                win.message("No crown model: " + "; ".join(win.model_errors))
            return
        if win.store is not None and not self.confirm_rerun(name):
            win.message(f"{name}: not re-run; its decision stands")
            return
        if win.framing.locating(name):
            # the run must use the frame being proposed, not the bare picked centre
            self.after_locate = name
            win.message(f"{name}: the run starts once the frame is proposed…")
            return
        self._start_run(name)

    def run_if_waiting(self, name: str) -> None:
        """Start the run that waited for ``name``'s frame to be located."""
        if self.after_locate == name:
            self.after_locate = None
            self.run_current()

    def _start_run(self, name: str) -> None:
        win = self.win
        case = win.cases[name]
        self.tag = win.new_tag("run", name)
        win.transient_errors.pop(name, None)
        win.set_status(name, CaseStatus.RUNNING)
        self.set_busy(True, f"{name}: starting")
        win.runner.submit(self.tag, self._run_fn(case))

    def run_all_pending(self) -> None:
        """Queue every new case of the workspace and run them one after another."""
        win = self.win
        if self.tag is not None or win.crown_model is None:
            return
        self.queue = [n for n in win.order if win.statuses[n] is CaseStatus.NEW and self.can_run(n)]
        if not self.queue:
            win.message("Nothing pending to run")
            return
        self.batch.update(total=len(self.queue), done=0, errors=0, active=True)
        self._next_in_queue()

    def _next_in_queue(self) -> None:
        win = self.win
        while self.queue:
            name = self.queue.pop(0)
            if name in win.cases and win.statuses.get(name) is CaseStatus.NEW:
                self._start_run(name)
                win.update_counts()
                return
        if self.batch["active"]:
            b = self.batch
            win.message(f"Batch finished: {b['done']} run, {b['errors']} failed")
            self.batch["active"] = False
        self.set_busy(False)
        win.update_counts()

    def cancel_runs(self) -> None:
        """Stop the running case (between batches) and the rest of the queue."""
        self.queue.clear()
        self.batch["active"] = False
        tag = self.tag
        if tag is None:
            return
        self._drop_run(tag, f"Run of {tag.case} cancelled; the case is as it was")

    def cancel_single_run_of(self, name: str) -> None:
        """Cancel ``name``'s single run (not a batch's) because another case was selected."""
        tag = self.tag
        if tag is not None and tag.case == name and not self.batch["active"]:
            self._drop_run(tag, f"Run of {name} cancelled (another case was selected)")

    def _drop_run(self, tag: Tag, text: str) -> None:
        win = self.win
        win.runner.cancel(tag)
        self.tag = None
        win.set_status(tag.case)
        self.set_busy(False)
        win.last_outcome[tag.case] = "run cancelled"
        win.message(text)
        win.run_finished.emit(tag.case, "cancelled")

    def reset(self) -> None:
        """Forget the queue, the batch and the running task (the workspace is being left)."""
        self.queue.clear()
        self.tag = None
        self.batch.update(total=0, done=0, errors=0, active=False)
        self.set_busy(False)

    def set_busy(self, busy: bool, text: str = "") -> None:
        win = self.win
        win.cancel_button.setEnabled(busy)
        win.progress.setValue(0)
        win.progress.setFormat(text if busy else "")
        self.update_actions()

    def update_actions(self) -> None:
        """Enable Run and Run all when nothing runs and there is something to run."""
        win = self.win
        idle = self.tag is None
        can = self.can_run(win.current)
        win.run_button.setEnabled(idle and can)
        win.run_all_button.setEnabled(idle and win.crown_model is not None and bool(win.order))
        if hasattr(win, "act_run"):
            win.act_run.setEnabled(idle and can)
            win.act_run_all.setEnabled(win.run_all_button.isEnabled())

    def batch_text(self) -> str:
        """ "batch 2/5 (1 failed)" while a batch runs, else empty."""
        b = self.batch
        if not b["active"]:
            return ""
        return f"batch {b['done']}/{b['total']}" + (
            f" ({b['errors']} failed)" if b["errors"] else ""
        )

    # ============================================================ worker signals
    def _on_progress(self, tag: Tag, stage: str, fraction: float) -> None:
        if tag == self.tag:
            self.win.progress.setValue(int(1000 * fraction))
            prefix = ""
            if self.batch["active"]:
                prefix = f"[{self.batch['done'] + 1}/{self.batch['total']}] "
            self.win.progress.setFormat(f"{prefix}{tag.case}: {stage} %p%")

    def _on_done(self, tag: Tag, result: Any) -> None:
        if tag.kind != "run" or tag != self.tag:
            return
        win = self.win
        self.tag = None
        case_result, view = result
        self._record_run(tag.case, "generated")
        if tag.case == win.current:
            win.decisions.show_history()  # its decision, if any, is now superseded
        win.transient_errors.pop(tag.case, None)
        win.replace_view(tag, view)
        win.set_status(tag.case)
        win.models.set_providers(case_result.providers, win.provider_notes)
        secs = sum(case_result.report.timings_ms.values()) / 1000
        warnings = case_result.crown.warnings
        checks = f", {len(warnings)} crown check(s) to look at" if warnings else ""
        win.last_outcome[tag.case] = f"generated in {secs:.1f} s{checks}"
        win.message(
            f"{tag.case}: generated ({len(case_result.written)} files written){checks}"
            + (f": {warnings[0]}" if warnings else "")
        )
        if tag.case == win.current:
            win.show_view(view)
        self._after_run(tag, "generated")

    def _on_failed(self, tag: Tag, exc: object, tb: str) -> None:
        if tag.kind != "run" or tag != self.tag:
            return
        win = self.win
        text = failure_text(exc)
        self.tag = None
        self._record_run(tag.case, "error", text)
        win.transient_errors.pop(tag.case, None)
        win.set_status(tag.case)
        win.last_outcome[tag.case] = "run failed"
        win.message(f"{tag.case}: {text}")
        if not isinstance(exc, CrownscanError):
            logging.getLogger("crownscan").error("run of %s failed:\n%s", tag.case, tb)
        self._after_run(tag, "error")

    def _record_run(self, name: str, outcome: str, text: str = "") -> None:
        """Store a run's outcome (superseding the case's decision when it generated); a
        database that refuses is said in the status bar and a message box, not raised."""
        if self.win.store is None:
            return
        try:
            self.win.store.record_run(name, outcome, text)
        except CrownscanError as exc:
            self.win.message(f"{name}: run outcome not saved: {exc}")
            QtWidgets.QMessageBox.warning(self.win, "Run outcome not saved", str(exc))

    def _on_cancelled(self, tag: Tag) -> None:
        if tag.kind == "run" and tag == self.tag:
            self.tag = None
            self.win.set_status(tag.case)
            self._after_run(tag, "cancelled")

    def _after_run(self, tag: Tag, outcome: str) -> None:
        if self.batch["active"]:
            self.batch["done"] += 1
            if outcome == "error":
                self.batch["errors"] += 1
        self.set_busy(False)
        self.win.run_finished.emit(tag.case, outcome)
        if self.batch["active"]:
            self._next_in_queue()
        self.win.update_counts()


__all__ = ["RunController"]
