"""A case's status follows its files: stale errors and results made from other inputs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from app.core.input_state import (
    check_inputs,
    current_status,
    error_is_stale,
    inputs_stamp,
    read_input_state,
)
from app.core.qa_store import Decision, QaRecord, RunRecord
from app.core.workspace import CaseStatus, discover_cases, input_hash


def later() -> float:
    """A moment clearly after the last file change (file times follow a coarse clock)."""
    time.sleep(0.03)
    now = time.time()
    time.sleep(0.03)
    return now


def _case(root: Path, scan: bytes = b"solid x\nendsolid x\n"):
    folder = root / "case_a"
    folder.mkdir()
    (folder / "scan.stl").write_bytes(scan)
    (folder / "image.png").write_bytes(b"png bytes")
    (case,) = discover_cases(root)
    return case


def _error_run(time: float) -> RunRecord:
    from datetime import UTC, datetime

    return RunRecord(
        "case_a", "error", "scan.stl: empty file", datetime.fromtimestamp(time, UTC).isoformat()
    )


def _write_run_json(case, recorded_hash: str) -> None:
    case.output_dir.mkdir()
    case.crown_path.write_bytes(b"crown")
    case.mask_path(case.images[0]).write_bytes(b"mask")
    later()  # output/ was made before run.json
    case.run_info_path.write_text(json.dumps({"input_hash": recorded_hash}), encoding="utf-8")
    later()


def test_an_error_from_before_the_file_changed_no_longer_makes_the_status(tmp_path):
    case = _case(tmp_path, scan=b"")
    failed = _error_run(later())
    assert not error_is_stale(case, failed)
    assert current_status(case, None, failed) is CaseStatus.ERROR
    case.scan.write_bytes(b"solid x\nendsolid x\n")  # fixed now, long after the failed run
    assert error_is_stale(case, failed)
    assert current_status(case, None, failed) is CaseStatus.NEW


def test_a_file_copied_in_with_its_old_date_still_counts_as_changed(tmp_path):
    case = _case(tmp_path, scan=b"")
    failed = _error_run(later())
    replacement = tmp_path / "fixed.stl"
    replacement.write_bytes(b"solid y\nendsolid y\n")
    os.utime(replacement, (0, 0))
    replacement.replace(case.scan)  # renamed into place: old mtime, new change time
    assert error_is_stale(case, failed)


def test_inputs_changed_since_the_run_only_when_their_bytes_differ(tmp_path):
    case = _case(tmp_path)
    _write_run_json(case, input_hash(case))
    assert read_input_state(case).changed is False
    assert current_status(case, None, None, read_input_state(case)) is CaseStatus.GENERATED
    os.utime(case.images[0])  # touched, same bytes: hashed and found equal
    state = read_input_state(case)
    assert (state.changed, state.now_hash) == (False, input_hash(case))
    case.images[0].write_bytes(b"other png bytes")
    state = read_input_state(case)
    assert state.changed is True and state.now_hash == input_hash(case)
    assert current_status(case, None, None, state) is CaseStatus.INPUTS_CHANGED


def test_a_decision_on_todays_inputs_stands_and_an_older_one_does_not(tmp_path):
    case = _case(tmp_path)
    _write_run_json(case, input_hash(case))
    case.images[0].write_bytes(b"other png bytes")
    state = read_input_state(case)
    on_today = QaRecord("case_a", Decision.APPROVED, time="2030-01-01", input_hash=state.now_hash)
    on_old = QaRecord("case_a", Decision.APPROVED, time="2030-01-01", input_hash="0" * 64)
    assert current_status(case, on_today, None, state) is CaseStatus.APPROVED
    assert current_status(case, on_old, None, state) is CaseStatus.INPUTS_CHANGED


def test_check_hashes_again_only_cases_whose_files_changed(tmp_path, monkeypatch):
    from app.core import input_state

    case = _case(tmp_path)
    _write_run_json(case, "0" * 64)
    os.utime(case.scan)  # newer than the run: the check must hash it
    first = check_inputs([case], {})
    assert first["case_a"][1].changed is True
    hashed = []
    monkeypatch.setattr(input_state, "input_hash", lambda c: hashed.append(c.name) or "x")
    again = check_inputs([case], first)
    assert again == first and hashed == []
    case.scan.write_bytes(b"solid z\nendsolid z\n")
    assert inputs_stamp(case) != first["case_a"][0]
    check_inputs([case], first)
    assert hashed == ["case_a"]
