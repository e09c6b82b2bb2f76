"""Whether a case's last run still speaks for the files on disk now.

A run is tied to the inputs it read: a successful one by the inputs' hash in ``run.json``, a
failed one by its time. When the technician fixes or replaces an input, the failed run's error
belongs to the old file and no longer makes the case's status, and a result made from other
inputs than today's shows as "inputs changed — re-run".

Checks look at file times first (cheap ``stat`` calls) and hash the inputs only when a file is
newer than the run, so a workspace of unchanged cases costs no reading. Hashing reads whole
scans: callers with a window do it off the GUI thread.

Qt-free: the window, the CLI and tests use the same functions.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import InputError
from app.core.qa_store import QaRecord, RunRecord, case_status
from app.core.report import CancelToken
from app.core.workspace import Case, CaseStatus, input_hash


@dataclass(frozen=True)
class InputState:
    """What the files say about a case's last successful run.

    ``changed``: the inputs differ from those ``run.json`` recorded; ``now_hash``: the inputs'
    hash now, when it was computed (empty when no file was newer than the run).
    """

    changed: bool = False
    now_hash: str = ""


StatEntry = tuple[str, int, int, int]
InputStamp = tuple[StatEntry, ...]


def stat_entry(path: Path) -> StatEntry:
    """Name, size, modification and change time of a file (-1 each when it cannot be read)."""
    try:
        st = path.stat()
    except OSError:
        return (path.name, -1, -1, -1)
    return (path.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def inputs_stamp(case: Case) -> InputStamp:
    """The :func:`stat_entry` of each input, then of ``run.json``: equal stamps, equal state."""
    return tuple(stat_entry(p) for p in (*case.inputs, case.run_info_path))


def changed_after(case: Case, when: float) -> bool:
    """True when an input file or the case folder's listing changed after time ``when``.

    Both the modification and the change time count: a file copied in with its old date, or
    renamed into place, still has a new change time. A file that cannot be read counts as
    changed. The folder's own time covers inputs added or removed.
    """
    for path in (case.folder, *case.inputs):
        try:
            st = path.stat()
        except OSError:
            return True
        if max(st.st_mtime, st.st_ctime) > when:
            return True
    return False


def _timestamp(iso: str) -> float | None:
    try:
        return _dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def error_is_stale(case: Case, run: RunRecord | None) -> bool:
    """True when ``run`` failed and an input changed after it: its error was about old files."""
    if run is None or run.outcome != "error":
        return False
    when = _timestamp(run.time)
    return when is not None and changed_after(case, when)


def read_input_state(case: Case) -> InputState:
    """Compare the inputs now with those the last successful run recorded in ``run.json``.

    Hashes the inputs only when one of them (or the folder's listing) is newer than
    ``run.json``; an input that cannot be read counts as changed.
    """
    try:
        ran = case.run_info_path.stat().st_mtime
    except OSError:
        return InputState()
    if not changed_after(case, ran):
        return InputState()
    try:
        info = json.loads(case.run_info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return InputState()
    recorded = info.get("input_hash") if isinstance(info, dict) else None
    if not recorded:
        return InputState()
    try:
        now = input_hash(case)
    except InputError:
        return InputState(changed=True)
    return InputState(changed=now != recorded, now_hash=now)


def check_inputs(
    cases: Iterable[Case],
    known: Mapping[str, tuple[InputStamp, InputState]],
    cancel: CancelToken | None = None,
) -> dict[str, tuple[InputStamp, InputState]]:
    """The input state of each case, reusing ``known`` states whose stamp is unchanged."""
    cancel = cancel or CancelToken()
    out = {}
    for case in cases:
        cancel.check()
        stamp = inputs_stamp(case)
        before = known.get(case.name)
        out[case.name] = (
            before if before and before[0] == stamp else (stamp, read_input_state(case))
        )
    return out


def current_status(
    case: Case,
    decision: QaRecord | None,
    run: RunRecord | None,
    state: InputState | None = None,
) -> CaseStatus:
    """A case's status from its records and the files now.

    As :func:`~app.core.qa_store.case_status`, except that a failed run older than the
    inputs is ignored, and a result made from other inputs is "inputs changed" unless the
    current decision was made on exactly today's inputs.
    """
    status = case_status(case, decision, None if error_is_stale(case, run) else run)
    if state is None or not state.changed or status in (CaseStatus.NEW, CaseStatus.ERROR):
        return status
    if decision is not None and state.now_hash and decision.input_hash == state.now_hash:
        return status
    return CaseStatus.INPUTS_CHANGED


__all__ = [
    "InputStamp",
    "InputState",
    "changed_after",
    "check_inputs",
    "current_status",
    "error_is_stale",
    "inputs_stamp",
    "read_input_state",
    "stat_entry",
]
