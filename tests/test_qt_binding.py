"""The Qt binding the app runs on keeps Python's reference counts: every worker report, result
and shown case is a Python-side signal emit, so a leak per emit adds up over a lab's day."""

from __future__ import annotations

import sys

from PySide6 import QtCore


class _Emitter(QtCore.QObject):
    bare = QtCore.Signal()
    carrying = QtCore.Signal(object)


def test_signal_emit_keeps_the_reference_counts_of_true_and_false() -> None:
    """PySide6 6.12.0 drops one reference to True per emit; on Python 3.11 (True not yet
    immortal) the process then aborts with ``bool_dealloc`` after a few thousand emits."""
    emitter = _Emitter()
    received = []
    emitter.carrying.connect(received.append)
    before = sys.getrefcount(True), sys.getrefcount(False)
    for i in range(200):
        emitter.bare.emit()
        emitter.carrying.emit(i)
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert received == list(range(200))
    assert after == before, (
        f"references to (True, False) changed by {after[0] - before[0]}, {after[1] - before[1]}"
    )
