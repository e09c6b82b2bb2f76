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
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from PySide6 import QtCore

TICK_MS = 10
STACKS_ENV = "CROWNSCAN_PROBE_STACKS"


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
        self._sampler: StallSampler | None = None
        stacks_ms = os.environ.get(STACKS_ENV)
        if stacks_ms:
            self._sampler = StallSampler(self, float(stacks_ms))

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
        if self._sampler is not None:
            self._sampler.report(result.phase)
        return result


class StallSampler:
    """Where the time went while the GUI thread stalled: a daemon thread wakes every few ms and,
    once the probe's last tick is ``min_ms`` old, samples the GUI thread's Python stack; a
    wake-up that came late means some thread held the interpreter (a long C call that keeps
    it, such as a VTK render or some numpy calls), and the other threads' stacks are taken
    then. At the end of each phase it prints (to stderr) every stall with the stacks seen most
    often during it.

    A maintainer's aid (``CROWNSCAN_PROBE_STACKS=<min_ms>``), not a profiler: a C call shows
    as the Python frame that made it.
    """

    WAKE_S = 0.003
    HELD_MS = 15.0

    def __init__(self, probe: LatencyProbe, min_ms: float, depth: int = 5) -> None:
        self.probe = probe
        self.min_ms = min_ms
        self.depth = depth
        self.gui_thread = threading.get_ident()
        self.stalls: dict[float, _Stall] = {}
        threading.Thread(target=self._sample, name="stall-sampler", daemon=True).start()

    def _stack(self, frame) -> str:
        parts = []
        while frame is not None and len(parts) < self.depth:
            code = frame.f_code
            parts.append(f"{_tail(code.co_filename)}:{frame.f_lineno} {code.co_name}")
            frame = frame.f_back
        return " < ".join(parts) or "(in Qt or C++)"

    def _sample(self) -> None:
        me = threading.get_ident()
        woke = time.perf_counter()
        while True:
            time.sleep(self.WAKE_S)
            now = time.perf_counter()
            held_ms = (now - woke - self.WAKE_S) * 1000.0
            woke = now
            start = self.probe._last
            late = (now - start) * 1000.0 - self.probe.tick_ms
            if late < self.min_ms or self.probe.current is None:
                continue
            frames = sys._current_frames()
            stall = self.stalls.setdefault(start, _Stall())
            stall.late_ms = max(stall.late_ms, late)
            stall.gui[self._stack(frames.get(self.gui_thread))] += 1
            if held_ms > self.HELD_MS:
                stall.held_ms += held_ms
                names = {t.ident: t.name for t in threading.enumerate()}
                for ident, frame in frames.items():
                    if ident != me:
                        who = "GUI" if ident == self.gui_thread else names.get(ident, "?")
                        stall.others[f"{who}: {self._stack(frame)}"] += held_ms

    def report(self, phase: str) -> None:
        stalls, self.stalls = self.stalls, {}
        for stall in (stalls[k] for k in sorted(stalls)):
            gui, count = stall.gui.most_common(1)[0]
            lines = [
                f"stall {phase}: >= {stall.late_ms:.0f} ms, interpreter held "
                f"{stall.held_ms:.0f} ms; GUI thread {count}/{stall.gui.total()}: {gui}"
            ]
            lines += [f"stall   held {ms:.0f} ms, {who}" for who, ms in stall.others.most_common(3)]
            print("\n".join(lines), file=sys.stderr, flush=True)


@dataclass
class _Stall:
    late_ms: float = 0.0
    held_ms: float = 0.0
    gui: Counter = field(default_factory=Counter)
    others: Counter = field(default_factory=Counter)


def _tail(filename: str) -> str:
    """The last two parts of a source file's path (enough to tell the module)."""
    return "/".join(filename.replace(os.sep, "/").split("/")[-2:])


__all__ = ["PhaseLatency", "LatencyProbe", "TICK_MS", "summarize"]
