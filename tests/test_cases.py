"""Workspace discovery, case status, QA records in SQLite and the CSV report (no Qt)."""

from __future__ import annotations

import csv
import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.core import qa_store, workspace
from app.core.crown.frame import CaseFrame
from app.core.errors import InputError
from app.core.qa_store import Decision, QaRecord, QaStore, case_status
from app.core.workspace import Case, CaseStatus, discover_cases, input_hash


def make_workspace(root: Path) -> Path:
    ws = root / "ws"
    (ws / "case_b").mkdir(parents=True)
    (ws / "case_b" / "scan.stl").write_bytes(b"solid x\nendsolid x\n")
    (ws / "case_b" / "b_image.png").write_bytes(b"png-b")
    (ws / "case_b" / "a_image.JPG").write_bytes(b"jpg-a")
    (ws / "case_b" / "notes.txt").write_text("ignored")
    (ws / "case_a").mkdir()
    (ws / "case_a" / "z.ply").write_bytes(b"ply z")
    (ws / "case_a" / "a.obj").write_bytes(b"obj a")
    (ws / "images_only").mkdir()
    (ws / "images_only" / "x.png").write_bytes(b"png")
    (ws / "empty").mkdir()
    (ws / ".hidden").mkdir()
    (ws / ".hidden" / "scan.stl").write_bytes(b"x")
    (ws / "stray.stl").write_bytes(b"not a case")
    return ws


def test_discover_cases_finds_case_folders_sorted_with_first_mesh(tmp_path):
    ws = make_workspace(tmp_path)
    found = discover_cases(ws)
    assert [c.name for c in found] == ["case_a", "case_b", "images_only"]
    a, b, img_only = found
    assert a.scan == ws / "case_a" / "a.obj"
    assert a.images == ()
    assert b.scan == ws / "case_b" / "scan.stl"
    assert [p.name for p in b.images] == ["a_image.JPG", "b_image.png"]
    assert b.problem is None
    assert img_only.scan is None and "no scan mesh" in img_only.problem
    assert b.output_dir == ws / "case_b" / "output"
    assert b.mask_path(b.images[0]) == ws / "case_b" / "output" / "a_image_mask.png"


def test_discover_cases_missing_workspace_names_it(tmp_path):
    with pytest.raises(InputError) as err:
        discover_cases(tmp_path / "nope")
    assert "nope" in str(err.value)


def test_input_hash_is_sha256_of_inputs_and_changes_with_content(tmp_path):
    ws = make_workspace(tmp_path)
    case = discover_cases(ws)[1]
    ref = hashlib.sha256()
    for p in case.inputs:
        ref.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    assert input_hash(case) == ref.hexdigest()
    before = input_hash(case)
    (ws / "case_b" / "b_image.png").write_bytes(b"png-b changed")
    assert input_hash(case) != before


def test_store_round_trip_and_latest_decision(tmp_path):
    ws = make_workspace(tmp_path)
    with QaStore(ws) as store:
        first = store.record_decision(QaRecord("case_a", Decision.REJECTED, note="margin open"))
        second = store.record_decision(
            QaRecord(
                "case_a",
                Decision.APPROVED,
                note="ok, ünïcode",
                crown_model="crown_demo",
                crown_version="1",
                provider="cpu",
                input_hash="abc",
            )
        )
        store.record_decision(QaRecord("case_b", Decision.NEEDS_REWORK))
        assert first.id < second.id
        assert first.user == qa_store.current_user() and first.time
    # a fresh connection (as after a restart) sees everything
    with QaStore(ws) as store:
        latest = store.latest_decisions()
        assert latest["case_a"].decision is Decision.APPROVED
        assert latest["case_a"].note == "ok, ünïcode"
        assert latest["case_a"].provider == "cpu"
        assert latest["case_b"].decision is Decision.NEEDS_REWORK
        assert [r.decision for r in store.history("case_a")] == [
            Decision.REJECTED,
            Decision.APPROVED,
        ]


def test_decision_keeps_the_run_hash_beside_the_hash_at_decision_time(tmp_path):
    """A decision on a result whose inputs changed since its run says so, in the store and in
    the CSV report; one from a run that recorded no hash says it cannot tell."""
    with QaStore(tmp_path) as store:
        store.record_decision(
            QaRecord("same", Decision.APPROVED, input_hash="h1", run_input_hash="h1")
        )
        store.record_decision(
            QaRecord("moved", Decision.APPROVED, input_hash="h2", run_input_hash="h1")
        )
        store.record_decision(QaRecord("old_run", Decision.REJECTED, input_hash="h3"))
        latest = store.latest_decisions()
        assert latest["moved"].run_input_hash == "h1" and latest["moved"].input_hash == "h2"
        assert [latest[c].inputs_changed_since_run for c in ("same", "moved", "old_run")] == [
            False,
            True,
            None,
        ]
        store.export_csv(tmp_path / "qa.csv")
    rows = {r["case"]: r for r in csv.DictReader((tmp_path / "qa.csv").open(encoding="utf-8"))}
    assert rows["moved"]["run_input_hash"] == "h1" and rows["moved"]["input_hash"] == "h2"
    assert [rows[c]["inputs_changed_since_run"] for c in ("same", "moved", "old_run")] == [
        "no",
        "yes",
        "unknown",
    ]


def test_a_database_from_before_run_hashes_opens_and_gains_the_column(tmp_path):
    """The decisions table as first shipped (no ``run_input_hash``): old rows read back with an
    unknown run hash, new decisions store theirs, and a second open changes nothing."""
    db = sqlite3.connect(tmp_path / qa_store.DB_NAME)
    db.execute(
        "CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, case_name TEXT NOT NULL,"
        " decision TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', time TEXT NOT NULL,"
        " user TEXT NOT NULL, crown_model TEXT NOT NULL DEFAULT '',"
        " crown_version TEXT NOT NULL DEFAULT '', seg_model TEXT NOT NULL DEFAULT '',"
        " seg_version TEXT NOT NULL DEFAULT '', provider TEXT NOT NULL DEFAULT '',"
        " input_hash TEXT NOT NULL DEFAULT '')"
    )
    db.execute(
        "INSERT INTO decisions (case_name, decision, time, user, input_hash)"
        " VALUES ('old', 'approved', 't', 'u', 'h0')"
    )
    db.commit()
    db.close()
    with QaStore(tmp_path) as store:
        (old,) = store.history()
        assert (old.decision, old.input_hash, old.run_input_hash) == (Decision.APPROVED, "h0", "")
        store.record_decision(
            QaRecord("new", Decision.REJECTED, input_hash="b", run_input_hash="a")
        )
    with QaStore(tmp_path) as store:
        assert store.latest_decisions()["new"].inputs_changed_since_run is True
        assert store.latest_decisions()["old"].inputs_changed_since_run is None


def test_store_uses_rollback_journal_and_full_sync(tmp_path):
    with QaStore(tmp_path) as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_decision_is_committed_before_record_decision_returns(tmp_path):
    """A child process records a decision and dies without closing: the record is there, so it
    was committed, not left in an open transaction. (Surviving a power cut as well needs the
    disk sync that ``test_store_uses_rollback_journal_and_full_sync`` pins.)"""
    code = textwrap.dedent(
        f"""
        import os
        from app.core.qa_store import QaStore, QaRecord, Decision
        store = QaStore({str(tmp_path)!r})
        store.record_decision(QaRecord("case_x", Decision.APPROVED, note="saved"))
        os._exit(9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    assert proc.returncode == 9
    db = sqlite3.connect(tmp_path / qa_store.DB_NAME)
    rows = db.execute("SELECT case_name, decision, note FROM decisions").fetchall()
    db.close()
    assert rows == [("case_x", "approved", "saved")]


def test_export_csv_is_complete_and_quoted(tmp_path):
    with QaStore(tmp_path) as store:
        store.record_decision(QaRecord("c1", Decision.APPROVED, note='said "fine", then left'))
        store.record_decision(QaRecord("c2", Decision.REJECTED, note="line1\nline2"))
        out = tmp_path / "report" / "qa.csv"
        assert store.export_csv(out) == 2
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [r["case"] for r in rows] == ["c1", "c2"]
    assert rows[0]["note"] == 'said "fine", then left'
    assert rows[1]["note"] == "line1\nline2"
    assert rows[1]["decision"] == "rejected"
    assert list(rows[0]) == qa_store.CSV_COLUMNS
    assert not list(out.parent.glob(".*tmp"))


def test_export_csv_refuses_the_database_itself(tmp_path):
    with QaStore(tmp_path) as store, pytest.raises(InputError):
        store.export_csv(tmp_path / qa_store.DB_NAME)


def _case(tmp_path: Path, with_outputs: bool) -> Case:
    folder = tmp_path / "c"
    folder.mkdir(exist_ok=True)
    (folder / "scan.stl").write_bytes(b"x")
    (folder / "i.png").write_bytes(b"x")
    case = discover_cases(tmp_path)[0]
    if with_outputs:
        for p in case.expected_outputs():
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"out")
    return case


def test_case_status_from_outputs_decisions_and_runs(tmp_path):
    case = _case(tmp_path, with_outputs=False)
    assert case_status(case) is CaseStatus.NEW
    case = _case(tmp_path, with_outputs=True)
    assert case.outputs_present()
    assert case_status(case) is CaseStatus.GENERATED
    with QaStore(tmp_path) as store:
        store.record_run("c", "generated")
        store.record_decision(QaRecord("c", Decision.REJECTED))
        assert (
            case_status(case, store.latest_decisions()["c"], store.latest_runs()["c"])
            is CaseStatus.REJECTED
        )
        store.record_run("c", "error", "scan.stl: broken")
        dec, run = store.latest_decisions()["c"], store.latest_runs()["c"]
        assert case_status(case, dec, run) is CaseStatus.ERROR
        assert qa_store.error_text(case, run) == "scan.stl: broken"
        store.record_run("c", "generated")
        dec, run = store.latest_decisions().get("c"), store.latest_runs()["c"]
        assert dec is None  # the new outputs superseded the decision
        assert case_status(case, dec, run) is CaseStatus.GENERATED
        store.record_decision(QaRecord("c", Decision.NEEDS_REWORK))
        dec = store.latest_decisions()["c"]
        assert case_status(case, dec, run) is CaseStatus.NEEDS_REWORK


def test_case_without_scan_is_error_with_text(tmp_path):
    ws = make_workspace(tmp_path)
    img_only = discover_cases(ws)[2]
    assert case_status(img_only) is CaseStatus.ERROR
    assert "no scan mesh" in qa_store.error_text(img_only, None)


def test_pending_states():
    assert workspace.is_pending(CaseStatus.NEW)
    assert workspace.is_pending(CaseStatus.GENERATED)
    assert not workspace.is_pending(CaseStatus.APPROVED)
    assert not workspace.is_pending(CaseStatus.NEEDS_REWORK)
    assert not workspace.is_pending(CaseStatus.ERROR)


def test_case_frames_are_stored_replaced_and_cleared(tmp_path):
    turned = CaseFrame((4.0, 5.0, 6.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    with QaStore(tmp_path) as store:
        store.set_frame("c1", CaseFrame((1.5, -2.0, 3.25)))
        store.set_frame("c1", turned, "found")
        store.set_frame("c2", CaseFrame((0.0, 0.0, 0.0), occlusal=(0.0, 0.0, -2.0)))
        with pytest.raises(ValueError):
            store.set_frame("c3", CaseFrame((float("nan"), 0.0, 0.0)))
    with QaStore(tmp_path) as store:
        frames = store.frames()
        assert frames["c1"] == turned
        assert frames["c2"] == CaseFrame((0.0, 0.0, 0.0), (0.0, 0.0, -1.0), None)
        assert store.frame_sources() == {"c1": "found", "c2": "given"}
        store.set_frame("c1", None)
        assert list(store.frames()) == ["c2"]


def test_centres_picked_before_frames_had_directions_still_load(tmp_path):
    """A workspace database from before the frame's directions: its picked centres open as
    centre-only frames, and new frames with directions save into it."""
    db = sqlite3.connect(tmp_path / qa_store.DB_NAME)
    db.execute(
        "CREATE TABLE centres (case_name TEXT PRIMARY KEY, x REAL NOT NULL, y REAL NOT NULL,"
        " z REAL NOT NULL, time TEXT NOT NULL, user TEXT NOT NULL)"
    )
    db.execute("INSERT INTO centres VALUES ('old', 1.0, 2.0, 3.0, 't', 'u')")
    db.commit()
    db.close()
    with QaStore(tmp_path) as store:
        assert store.frames() == {"old": CaseFrame((1.0, 2.0, 3.0))}
        assert store.frame_sources() == {"old": "given"}
        store.set_frame("new", CaseFrame((0, 0, 0), (1, 0, 0), (0, 1, 0)))
    with QaStore(tmp_path) as store:
        assert store.frames()["new"].mesial == (0.0, 1.0, 0.0)
