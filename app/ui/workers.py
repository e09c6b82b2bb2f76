"""Background work for the window: a small thread pool whose results come back tagged.

Every task carries a :class:`Tag` (what kind of work, for which case, which run generation).
Cancelling a task sets its :class:`CancelToken` and forgets its tag at once, so anything the
task still emits afterwards is dropped here: a result for a case the technician has left can
never reach the window. Signals are delivered on the GUI thread (queued connections); the
work functions never touch a widget.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6 import QtCore

from app.core.errors import Cancelled, CrownscanError
from app.core.report import CancelToken, ProgressFn

TaskFn = Callable[[CancelToken, ProgressFn], Any]
PROGRESS_EVERY_MS = 250
"""Progress reaches the window at most this often per task (the latest report wins): each
repaint of a status-bar widget costs tens of ms in a window holding an OpenGL view."""


BACKGROUND_NICE = 10
"""How much nicer (Linux) the worker threads, and the ONNX Runtime threads they start, are than
the process."""
_lowered = threading.local()


def lower_thread_priority() -> None:
    """Let the calling worker thread give way to the GUI thread for the CPU.

    On two cores a run's decoder threads and software OpenGL compete for the same CPUs; the
    window's render then takes twice as long. Threads a niced thread starts (ONNX Runtime's
    pool, made with its session) inherit the nice value on Linux. Done once per thread.
    """
    if getattr(_lowered, "done", False):
        return
    _lowered.done = True
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        try:
            os.setpriority(
                os.PRIO_PROCESS,
                tid,
                min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE),
            )
        except OSError:  # not allowed here: the thread keeps the normal priority
            pass
    else:
        QtCore.QThread.currentThread().setPriority(QtCore.QThread.Priority.LowPriority)


@dataclass(frozen=True)
class Tag:
    """Identifies one task: ``kind`` ("run", "load", "prefetch", ...), case name, generation."""

    kind: str
    case: str
    gen: int


def failure_text(exc: object) -> str:
    """What the technician reads for a failed task: a Crownscan error as is, else its type."""
    if isinstance(exc, CrownscanError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def spin_until(
    condition: Callable[[], bool],
    timeout_ms: int,
    flags: QtCore.QEventLoop.ProcessEventsFlag = QtCore.QEventLoop.ProcessEventsFlag.AllEvents,
) -> bool:
    """Run a local event loop until ``condition()`` holds (checked every 10 ms) or
    ``timeout_ms`` passes; returns ``condition()``."""
    if condition():
        return True
    clock = QtCore.QElapsedTimer()
    clock.start()
    loop = QtCore.QEventLoop()
    poll = QtCore.QTimer()
    poll.setInterval(10)
    poll.timeout.connect(
        lambda: loop.quit() if condition() or clock.hasExpired(timeout_ms) else None
    )
    poll.start()
    loop.exec(flags)
    poll.stop()
    return condition()


class _Relay(QtCore.QObject):
    """Lives on the GUI thread; worker threads emit through it (queued to the GUI thread)."""

    progress = QtCore.Signal(object, str, float)
    done = QtCore.Signal(object, object)
    failed = QtCore.Signal(object, object, str)
    cancelled = QtCore.Signal(object)


class _Task(QtCore.QRunnable):
    def __init__(self, relay: _Relay, tag: Tag, token: CancelToken, fn: TaskFn) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._relay, self._tag, self._token, self._fn = relay, tag, token, fn

    def run(self) -> None:
        lower_thread_priority()
        relay, tag, token = self._relay, self._tag, self._token

        def progress(stage: str, fraction: float) -> None:
            if not token.cancelled:
                relay.progress.emit(tag, stage, float(fraction))

        try:
            token.check()
            result = self._fn(token, progress)
            token.check()
        except Cancelled:
            relay.cancelled.emit(tag)
        except Exception as exc:  # shown to the technician; the window keeps working
            relay.failed.emit(tag, exc, traceback.format_exc())
        else:
            relay.done.emit(tag, result)
        finally:
            self._fn = None  # type: ignore[assignment]


class TaskRunner(QtCore.QObject):
    """Runs tasks on its own pool; re-emits their signals only while a task is still wanted.

    ``progress(tag, stage, fraction)``, ``done(tag, result)``, ``failed(tag, exc, traceback)``
    and ``cancelled(tag)`` fire on the GUI thread. ``finished(tag)`` follows each of them for
    tasks still wanted, and ``idle()`` when nothing wanted is left.
    """

    progress = QtCore.Signal(object, str, float)
    done = QtCore.Signal(object, object)
    failed = QtCore.Signal(object, object, str)
    cancelled = QtCore.Signal(object)
    finished = QtCore.Signal(object)

    def __init__(self, parent: QtCore.QObject | None = None, threads: int = 2) -> None:
        super().__init__(parent)
        self._pool = QtCore.QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._relay = _Relay(self)
        self._active: dict[Tag, CancelToken] = {}
        self._relay.progress.connect(self._on_progress)
        self._relay.done.connect(self._on_done)
        self._relay.failed.connect(self._on_failed)
        self._relay.cancelled.connect(self._on_cancelled)
        self.dropped = 0
        self._progress_due: dict[Tag, tuple[str, float]] = {}
        self._progress_held = False
        self._progress_timer = QtCore.QTimer(self)
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(PROGRESS_EVERY_MS)
        self._progress_timer.timeout.connect(self._flush_progress)

    def submit(self, tag: Tag, fn: TaskFn) -> CancelToken:
        """Start ``fn(cancel_token, progress)`` on the pool; replaces a task with the same tag."""
        self.cancel(tag)
        token = CancelToken()
        self._active[tag] = token
        self._pool.start(_Task(self._relay, tag, token, fn))
        return token

    def is_active(self, tag: Tag) -> bool:
        return tag in self._active

    def active(self) -> list[Tag]:
        return list(self._active)

    def cancel(self, tag: Tag) -> bool:
        """Stop a task between batches and drop whatever it still reports."""
        token = self._active.pop(tag, None)
        if token is None:
            return False
        token.cancel()
        return True

    def cancel_where(self, predicate: Callable[[Tag], bool]) -> list[Tag]:
        tags = [t for t in self._active if predicate(t)]
        for t in tags:
            self.cancel(t)
        return tags

    def running(self) -> int:
        """How many tasks are executing now, cancelled ones included until they return."""
        return self._pool.activeThreadCount()

    def stop(self, timeout_ms: int) -> bool:
        """Cancel everything and keep the event loop turning (paints, timers; no user input)
        until the workers return or ``timeout_ms`` passes; True when none is left running."""
        self.cancel_where(lambda t: True)
        return spin_until(
            lambda: not self.running(),
            timeout_ms,
            QtCore.QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents,
        )

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and wait for the pool's threads to finish (at window close)."""
        self.cancel_where(lambda t: True)
        ok = self._pool.waitForDone(timeout_ms)
        QtCore.QCoreApplication.sendPostedEvents(self._relay)
        return ok

    def _wanted(self, tag: Tag) -> bool:
        if tag in self._active:
            return True
        self.dropped += 1
        return False

    def _on_progress(self, tag: Tag, stage: str, fraction: float) -> None:
        if tag in self._active:
            self._progress_due[tag] = (stage, fraction)
            if not self._progress_held:
                self._flush_progress()

    def _flush_progress(self) -> None:
        due, self._progress_due = self._progress_due, {}
        for tag, (stage, fraction) in due.items():
            if tag in self._active:
                self.progress.emit(tag, stage, fraction)
        self._progress_held = bool(due)
        if due:
            self._progress_timer.start()

    def _on_done(self, tag: Tag, result: object) -> None:
        if self._wanted(tag):
            self._active.pop(tag, None)
            self.done.emit(tag, result)
            self.finished.emit(tag)

    def _on_failed(self, tag: Tag, exc: object, tb: str) -> None:
        if self._wanted(tag):
            self._active.pop(tag, None)
            self.failed.emit(tag, exc, tb)
            self.finished.emit(tag)

    def _on_cancelled(self, tag: Tag) -> None:
        if self._wanted(tag):
            self._active.pop(tag, None)
            self.cancelled.emit(tag)
            self.finished.emit(tag)
