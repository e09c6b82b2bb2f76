"""How long the GUI thread keeps the window from answering, measured by the window itself.

A :class:`LatencyProbe` runs a short repeating timer on the event loop and records, for every
tick, how much later than asked it fired: while the GUI thread is busy (a render, a database
query, a decoder holding the interpreter) no tick can fire, so a tick's lateness is the stall
the technician felt. Ticks are grouped by the phase the caller names (start-up, showing a
result, a run...); when a phase ends it prints one JSON line
``{"phase": ..., "max_ms": ..., "p99_ms": ..., "ticks": ...}``. ``python -m app
--probe-latency`` turns it on; ``benchmarks/gui_latency.py`` reads the lines.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from PySide6 import QtCore

TICK_MS = 10


@dataclass(frozen=True)
class PhaseLatency:
    """The lateness of the ticks of one phase: worst, 99th percentile (ms), and how many."""

    phase: str
    max_ms: float
    p99_ms: float
    ticks: int

    def json_line(self) -> str:
        return json.dumps(
            {
                "phase": self.phase,
                "max_ms": round(self.max_ms, 1),
                "p99_ms": round(self.p99_ms, 1),
                "ticks": self.ticks,
            }
        )


def summarize(phase: str, late_ms: list[float]) -> PhaseLatency:
    """Worst and 99th-percentile lateness (nearest rank) of a phase's ticks."""
    if not late_ms:
        return PhaseLatency(phase, 0.0, 0.0, 0)
    ranked = sorted(late_ms)
    rank = max(1, math.ceil(0.99 * len(ranked)))
    return PhaseLatency(phase, ranked[-1], ranked[rank - 1], len(ranked))


class LatencyProbe(QtCore.QObject):
    """A ``TICK_MS`` heartbeat on the GUI thread whose lateness is recorded per phase.

    :meth:`phase` ends the current phase (printing its line) and starts the next;
    :meth:`finish` counts the time since the last tick as one more (the close of the window,
    after which no tick fires) and prints the last line. Results stay in :attr:`results`.
    """

    def __init__(
        self,
        parent: QtCore.QObject | None = None,
        tick_ms: int = TICK_MS,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("latencyProbe")
        self.tick_ms = tick_ms
        self.stream = stream
        self.current: str | None = None
        self.results: list[PhaseLatency] = []
        self._late: list[float] = []
        self._last = 0.0
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._timer.setInterval(tick_ms)
        self._timer.timeout.connect(self._tick)

    def phase(self, name: str) -> None:
        """End the current phase (if any) and measure the following ticks as ``name``."""
        self._close_phase()
        self.current = name
        self._late = []
        if not self._timer.isActive():
            self._last = time.perf_counter()
            self._timer.start()

    def finish_when_hidden(self, window: QtCore.QObject) -> None:
        """Finish when ``window`` is hidden (closed): from then on nothing is on the screen to
        stall, e.g. while the closing window waits for a worker to return."""
        window.installEventFilter(self)

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802
        if event.type() == QtCore.QEvent.Type.Hide and not event.spontaneous():
            self.finish()
        return False

    def finish(self) -> PhaseLatency | None:
        """Stop; the time since the last tick counts as one tick of the current phase."""
        if self.current is not None and self._timer.isActive():
            self._record(time.perf_counter())
        self._timer.stop()
        return self._close_phase()

    def _tick(self) -> None:
        self._record(time.perf_counter())

    def _record(self, now: float) -> None:
        self._late.append(max(0.0, (now - self._last) * 1000.0 - self.tick_ms))
        self._last = now

    def _close_phase(self) -> PhaseLatency | None:
        if self.current is None:
            return None
        result = summarize(self.current, self._late)
        self.results.append(result)
        self.current = None
        stream = self.stream if self.stream is not None else sys.stdout
        if stream is not None:  # a windowed Windows executable has no stdout
            print(result.json_line(), file=stream, flush=True)
        return result


__all__ = ["PhaseLatency", "LatencyProbe", "TICK_MS", "summarize"]
