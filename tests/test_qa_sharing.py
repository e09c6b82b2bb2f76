"""The QA store shared by several processes, killed mid-write, on a full or read-only
database; decisions superseded by a re-run stay in the history and the report."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from app.core import qa_store
from app.core.errors import InputError, PipelineError
from app.core.qa_store import Decision, QaRecord, QaStore

WRITER = Path(__file__).with_name("qa_writers.py")


def _integrity(workspace: Path) -> str:
    db = sqlite3.connect(workspace / qa_store.DB_NAME)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def _rows(workspace: Path) -> dict[int, str]:
    db = sqlite3.connect(workspace / qa_store.DB_NAME)
    try:
        return dict(db.execute("SELECT id, case_name FROM decisions").fetchall())
    finally:
        db.close()


@pytest.fixture
def shared_dir(tmp_path_factory) -> Path:
    """A workspace folder on a RAM file system where there is one: every commit of the QA
    store is fsynced, which on a plain disk costs ~35 ms and would make 1,200 decisions take
    most of a minute; the locking between processes is the same."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="crownscan-qa-", dir=shm))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("shared")


def run_writers(workspace: Path, processes: int, decisions: int) -> list[dict]:
    """Start the writers at once on a fresh workspace database; their JSON reports."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), str(workspace), f"p{i}", str(decisions)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def test_four_processes_share_one_database_without_failing_or_losing(shared_dir):
    reports = run_writers(shared_dir, 4, 300)
    assert [r["failed"] for r in reports] == [0, 0, 0, 0], [r["error"] for r in reports]
    saved = {i for r in reports for i in r["ids"]}
    rows = _rows(shared_dir)
    assert len(saved) == 1200 and saved <= set(rows) and len(rows) == 1200
    assert _integrity(shared_dir) == "ok"


def test_decisions_survive_kill_minus_nine_mid_write(tmp_path):
    """Writers killed while deciding: every decision they were told was saved is there, and
    the database is intact each time it is reopened."""
    told: set[int] = set()
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(tmp_path), f"k{round_}", "100000", "--stream"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(25 + 10 * round_):
            told.add(int(proc.stdout.readline()))
        proc.kill()
        proc.wait()
        told.update(int(line) for line in proc.stdout.read().split() if line.isdigit())
        assert _integrity(tmp_path) == "ok"
        with QaStore(tmp_path) as store:
            assert told <= {r.id for r in store.history()}


def test_database_locked_past_the_bounded_wait_says_so(tmp_path):
    store = QaStore(tmp_path, wait_s=0.5)
    holder = sqlite3.connect(tmp_path / qa_store.DB_NAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(PipelineError) as err:
            store.record_decision(QaRecord("c", Decision.APPROVED))
        with pytest.raises(InputError, match="cannot open the QA database: the database stayed"):
            QaStore(tmp_path, wait_s=0.5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()
    assert "stayed locked by another Crownscan" in str(err.value)
    assert str(err.value).endswith("try again; nothing was saved")


def test_full_database_disk_gives_the_real_cause(tmp_path):
    with QaStore(tmp_path) as store:
        store.record_decision(QaRecord("first", Decision.APPROVED))
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")  # the file may not grow: full
        with pytest.raises(PipelineError) as err:
            for i in range(200):
                store.record_decision(QaRecord(f"c{i}", Decision.APPROVED, note="x" * 500))
        assert "the disk is full" in str(err.value)
        assert "rollback" not in str(err.value)
        assert err.value.path == tmp_path / qa_store.DB_NAME
    assert _integrity(tmp_path) == "ok"
    assert "first" in _rows(tmp_path).values()


def test_read_only_database_gives_the_real_cause(tmp_path):
    with QaStore(tmp_path) as store:
        store._db.execute("PRAGMA query_only=1")
        with pytest.raises(PipelineError, match="the database is read-only"):
            store.record_decision(QaRecord("c", Decision.APPROVED))


def test_database_of_an_older_version_opens_and_gains_the_new_column(tmp_path):
    db = sqlite3.connect(tmp_path / qa_store.DB_NAME)
    db.executescript(
        """CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, case_name TEXT NOT NULL,
        decision TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', time TEXT NOT NULL,
        user TEXT NOT NULL, crown_model TEXT NOT NULL DEFAULT '',
        crown_version TEXT NOT NULL DEFAULT '', seg_model TEXT NOT NULL DEFAULT '',
        seg_version TEXT NOT NULL DEFAULT '', provider TEXT NOT NULL DEFAULT '',
        input_hash TEXT NOT NULL DEFAULT '');
        INSERT INTO decisions (case_name, decision, time, user)
        VALUES ('old', 'approved', '2025-01-01T00:00:00+00:00', 'tech');"""
    )
    db.commit()
    db.close()
    with QaStore(tmp_path) as store:
        assert store.latest_decisions()["old"].superseded == ""
        store.record_run("old", "generated")
        assert store.history("old")[0].superseded


def test_rerun_supersedes_the_decision_and_the_report_keeps_the_history(tmp_path):
    with QaStore(tmp_path) as store:
        store.record_decision(QaRecord("a", Decision.APPROVED, note="first look"))
        store.record_decision(QaRecord("b", Decision.REJECTED))
        store.record_run("a", "error", "scan.stl: broken")  # a failed run changes no output
        assert store.latest_decisions()["a"].note == "first look"
        store.record_run("a", "generated")
        assert "a" not in store.latest_decisions()
        old = store.history("a")[0]
        assert old.decision is Decision.APPROVED and old.superseded
        out = tmp_path / "qa.csv"
        assert store.export_csv(out) == 1
        store.record_decision(QaRecord("a", Decision.NEEDS_REWORK, note="second look"))
        assert store.export_csv(out) == 2
    current = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [(r["case"], r["decision"]) for r in current] == [
        ("b", "rejected"),
        ("a", "needs rework"),
    ]
    history = list(csv.DictReader(qa_store.history_csv_path(out).open(encoding="utf-8")))
    assert [(r["case"], r["decision"], bool(r["superseded"])) for r in history] == [
        ("a", "approved", True),
        ("b", "rejected", False),
        ("a", "needs rework", False),
    ]
    assert list(history[0]) == qa_store.HISTORY_COLUMNS
