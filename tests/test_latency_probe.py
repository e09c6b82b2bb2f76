"""The event-loop latency probe: it sees a stall where one is made, in the phase it was made
in, and the smoke command prints one well-formed line per phase. (It checks the probe, not how
fast the app is: the figures come from benchmarks/gui_latency.py.)"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gui_fixtures import *  # noqa: F403
from gui_fixtures import make_workspace
from PySide6 import QtCore

from app.ui.latency_probe import LatencyProbe, summarize

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[1]
STALL_S = 0.3


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_summary_is_the_worst_and_the_nearest_rank_99th_percentile():
    late = [float(v) for v in range(200, 0, -1)]
    s = summarize("x", late)
    assert (s.max_ms, s.p99_ms, s.ticks) == (200.0, 198.0, 200)
    assert summarize("empty", []).ticks == 0


def test_a_stall_on_the_gui_thread_shows_in_its_own_phase(qapp, qtbot):
    out = io.StringIO()
    probe = LatencyProbe(stream=out)
    probe.phase("before")
    qtbot.wait(150)
    probe.phase("stalled")
    QtCore.QTimer.singleShot(30, lambda: time.sleep(STALL_S))
    qtbot.wait(150 + int(1000 * STALL_S))
    probe.phase("after")
    qtbot.wait(100)
    time.sleep(STALL_S)  # a window closing: no tick fires again, finish() counts the gap
    probe.finish()
    rows = _lines(out)
    assert [r["phase"] for r in rows] == ["before", "stalled", "after"]
    assert all(set(r) == {"phase", "max_ms", "p99_ms", "ticks"} for r in rows)
    assert all(r["ticks"] > 0 and r["max_ms"] >= r["p99_ms"] >= 0 for r in rows)
    assert rows[1]["max_ms"] >= 1000 * STALL_S - 50
    assert rows[2]["max_ms"] >= 1000 * STALL_S - 50
    assert [round(r.max_ms, 1) for r in probe.results] == [r["max_ms"] for r in rows]


def _slow_slot() -> None:
    time.sleep(STALL_S)


def test_the_stack_sampler_names_the_code_that_stalled(qapp, qtbot, monkeypatch, capsys):
    monkeypatch.setenv("CROWNSCAN_PROBE_STACKS", "50")
    probe = LatencyProbe(stream=io.StringIO())
    probe.phase("quiet")
    qtbot.wait(200)
    probe.phase("stalled")
    QtCore.QTimer.singleShot(30, _slow_slot)
    qtbot.wait(150 + int(1000 * STALL_S))
    probe.finish()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("stall ")]
    assert lines, "no stall reported"
    assert all(ln.startswith("stall stalled: ") for ln in lines)
    worst = max(lines, key=lambda ln: float(ln.split(">= ")[1].split(" ms")[0]))
    assert "_slow_slot" in worst
    assert float(worst.split(">= ")[1].split(" ms")[0]) >= 1000 * STALL_S - 100


def test_smoke_command_prints_one_line_per_phase(tmp_path, fake_models):
    ws = make_workspace(tmp_path, broken=False, n=1)
    proc = subprocess.run(
        [
            sys.executable, "-m", "app", "--workspace", str(ws), "--case", "case_001", "--run",
            "--probe-latency", "--quit", "--models", str(fake_models), "--resolution", "20",
            "--settings", str(tmp_path / "smoke.ini"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["phase"] for r in rows] == ["start-up", "show result", "run", "quit"]
    for r in rows:
        assert isinstance(r["max_ms"], float) and isinstance(r["p99_ms"], float)
        assert r["max_ms"] >= r["p99_ms"] >= 0.0 and r["ticks"] >= 1
    assert rows[2]["ticks"] > 10  # the run phase lasted past the first tick
    assert "generated" in proc.stdout
