"""The QA record of a workspace, kept in SQLite: decisions, run outcomes and case frames.

QA decisions live in ``<workspace>/crownscan-qa.sqlite``: a decision is committed
(``synchronous=FULL``) before the caller may say it is saved, so it survives a crash from that
moment on. A case's status on opening the workspace comes from these records and its outputs.

Qt-free: the window, the CLI and tests use the same functions.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import getpass
import io
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.crown.frame import CaseFrame
from app.core.errors import InputError, PipelineError
from app.core.fileio import check_not_input, commit_set
from app.core.workspace import Case, CaseStatus, utc_now

DB_NAME = "crownscan-qa.sqlite"


class Decision(enum.StrEnum):
    """A QA decision; the value is what the database and the CSV report store."""

    APPROVED = "approved"
    REJECTED = "rejected"
    NEEDS_REWORK = "needs rework"

    @property
    def status(self) -> CaseStatus:
        return CaseStatus(self.value)


@dataclass(frozen=True)
class QaRecord:
    """One QA decision as stored: who decided what, on which inputs, with which models.

    ``input_hash`` is the inputs' hash when the decision was made, ``run_input_hash`` the one
    the judged run recorded (empty when unknown: a run from before runs recorded it).
    """

    case: str
    decision: Decision
    note: str = ""
    time: str = ""
    user: str = ""
    crown_model: str = ""
    crown_version: str = ""
    seg_model: str = ""
    seg_version: str = ""
    provider: str = ""
    input_hash: str = ""
    run_input_hash: str = ""
    id: int | None = None
    superseded: str = ""
    """When a later run replaced the outputs this decision judged (empty: still current)."""

    @property
    def inputs_changed_since_run(self) -> bool | None:
        """True when the inputs differ from those the judged run was made from (None: unknown)."""
        if not self.run_input_hash or not self.input_hash:
            return None
        return self.run_input_hash != self.input_hash


@dataclass(frozen=True)
class RunRecord:
    """The outcome of the latest run of a case: ``generated`` or ``error`` (with its message)."""

    case: str
    outcome: str
    message: str
    time: str


CSV_COLUMNS = [
    "case",
    "decision",
    "note",
    "time",
    "user",
    "crown_model",
    "crown_version",
    "seg_model",
    "seg_version",
    "provider",
    "input_hash",
    "run_input_hash",
    "inputs_changed_since_run",
]
HISTORY_COLUMNS = [*CSV_COLUMNS, "superseded"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_name TEXT NOT NULL,
    decision TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    time TEXT NOT NULL,
    user TEXT NOT NULL,
    crown_model TEXT NOT NULL DEFAULT '',
    crown_version TEXT NOT NULL DEFAULT '',
    seg_model TEXT NOT NULL DEFAULT '',
    seg_version TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    input_hash TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_case ON decisions(case_name, id);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_name TEXT NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_case ON runs(case_name, id);
CREATE TABLE IF NOT EXISTS centres (
    case_name TEXT PRIMARY KEY,
    x REAL NOT NULL,
    y REAL NOT NULL,
    z REAL NOT NULL,
    time TEXT NOT NULL,
    user TEXT NOT NULL
);
"""
_TABLES = ("decisions", "runs", "centres")
# Directions of the case frame, added to ``centres`` after it first shipped; NULL = none set.
_FRAME_COLUMNS = ("ox", "oy", "oz", "mx", "my", "mz")
# Columns added after a table first shipped, per table: older databases gain them on opening.
_ADDED_COLUMNS = {
    "centres": {**{c: "REAL" for c in _FRAME_COLUMNS}, "source": "TEXT"},
    # run_input_hash: the hash the judged run was made from, beside ``input_hash`` (the hash at
    # decision time); superseded: when a re-run voided the decision
    "decisions": {
        "run_input_hash": "TEXT NOT NULL DEFAULT ''",
        "superseded": "TEXT NOT NULL DEFAULT ''",
    },
}
BUSY_TIMEOUT_S = 5.0
"""How long SQLite itself waits for another process's lock before one retry."""
WAIT_S = 60.0
"""The bounded wait: after this long of retries on a locked database, the error is shown."""
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


def current_user() -> str:
    """The operating-system user recorded with each decision ("unknown" if it cannot be read)."""
    try:
        return getpass.getuser()
    except Exception:  # getpass raises OSError or KeyError on odd systems
        return "unknown"


def _db_cause(exc: sqlite3.Error, waited: float) -> str:
    """The real cause of a database failure, in words (not SQLite's follow-on errors)."""
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if code in (_BUSY, _LOCKED):
        return f"the database stayed locked by another Crownscan for {waited:.1f} s; try again"
    return {
        _FULL: "the disk is full; free some space",
        _READONLY: "the database is read-only (file or folder permissions, or a read-only share)",
        _IOERR: "input/output error (disk or network share failing)",
        _CORRUPT: "the database file is damaged",
        _NOTADB: "the file is not a Crownscan QA database",
        _CANTOPEN: "the database file cannot be opened (folder missing or not writable)",
    }.get(code, str(exc))


def _statements(
    sql: str, params: Sequence[Any], more: Sequence[tuple[str, Sequence[Any]]]
) -> Callable[[sqlite3.Connection], int]:
    def body(db: sqlite3.Connection) -> int:
        rowid = db.execute(sql, params).lastrowid
        for extra_sql, extra_params in more:
            db.execute(extra_sql, extra_params)
        return int(rowid or 0)

    return body


def _is_busy(exc: sqlite3.Error) -> bool:
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    return code in (_BUSY, _LOCKED)


class QaStore:
    """The workspace's QA database. Use from one thread (the GUI thread); close when done.

    Every write is its own transaction, committed before the method returns, with
    ``synchronous=FULL`` and the rollback journal: once ``record_decision`` returns the decision
    is on disk. Not WAL: labs keep workspaces on network shares, where WAL's shared-memory index
    does not work; decisions are tiny and rare, so WAL's concurrency buys nothing here.

    Several processes may share the database (a lab share): a locked database is waited for
    (SQLite's busy timeout, then retries with growing pauses) for at most ``wait_s`` seconds
    before an error says so; a full disk or a read-only database is named as such.
    """

    def __init__(self, workspace: str | Path, wait_s: float = WAIT_S) -> None:
        self.workspace = Path(workspace)
        self.path = self.workspace / DB_NAME
        self.wait_s = wait_s
        self._db: sqlite3.Connection | None = None
        try:
            self._retry(self._open)
        except sqlite3.Error as exc:
            if self._db is not None:
                self._db.close()
            raise InputError(
                self.path, f"cannot open the QA database: {_db_cause(exc, wait_s)}"
            ) from exc

    def _open(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=min(BUSY_TIMEOUT_S, self.wait_s)
            )
        self._db.execute("PRAGMA synchronous=FULL")
        if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "delete":
            self._db.execute("PRAGMA journal_mode=DELETE")
        have = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if not set(_TABLES) <= have or self._migrations():
            self._transaction(self._create_schema)

    def _create_schema(self, db: sqlite3.Connection) -> int:
        for sql in _SCHEMA.split(";"):
            if sql.strip():
                db.execute(sql)
        for sql in self._migrations():
            db.execute(sql)
        return 0

    def _migrations(self) -> list[str]:
        """ALTER TABLE statements for the columns an older database lacks."""
        out: list[str] = []
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if have:
                out += [
                    f"ALTER TABLE {table} ADD COLUMN {c} {kind}"
                    for c, kind in columns.items()
                    if c not in have
                ]
        return out

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> QaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, fn: Any) -> Any:
        """Run ``fn`` again while the database is locked by another process, pausing 50 ms,
        100 ms, ... up to 2 s (with jitter), until ``wait_s`` has passed."""
        start = time.monotonic()
        pause = 0.05
        while True:
            try:
                return fn()
            except sqlite3.Error as exc:
                if not _is_busy(exc) or time.monotonic() - start + pause > self.wait_s:
                    raise
            time.sleep(pause * (0.5 + random.random()))
            pause = min(2.0, pause * 2)

    def _transaction(self, body: Callable[[sqlite3.Connection], int]) -> int:
        """Run ``body(db)`` in one IMMEDIATE transaction and return what it returns.

        A failed statement or COMMIT is rolled back (if SQLite has not already done so) and
        the first error is what the caller sees, never "cannot rollback".
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = body(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        return result

    def _write(self, sql: str, params: Sequence[Any], *more: tuple[str, Sequence[Any]]) -> int:
        """One transaction of ``sql`` (plus ``more`` statements after it); returns the first
        statement's row id. Errors become :class:`PipelineError` with the real cause."""
        start = time.monotonic()
        try:
            return self._retry(lambda: self._transaction(_statements(sql, params, more)))
        except sqlite3.Error as exc:
            cause = _db_cause(exc, time.monotonic() - start)
            raise PipelineError(
                self.path, f"cannot save to the QA database: {cause}; nothing was saved"
            ) from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        start = time.monotonic()
        try:
            return self._retry(lambda: self._db.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            cause = _db_cause(exc, time.monotonic() - start)
            raise InputError(self.path, f"cannot read the QA database: {cause}") from exc

    def record_decision(self, record: QaRecord) -> QaRecord:
        """Store a decision (time and user filled in when empty); return it with its id."""
        rec = dataclasses.replace(
            record,
            decision=Decision(record.decision),
            time=record.time or utc_now(),
            user=record.user or current_user(),
        )
        row_id = self._write(
            "INSERT INTO decisions (case_name, decision, note, time, user, crown_model,"
            " crown_version, seg_model, seg_version, provider, input_hash, run_input_hash)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                rec.case,
                rec.decision.value,
                rec.note,
                rec.time,
                rec.user,
                rec.crown_model,
                rec.crown_version,
                rec.seg_model,
                rec.seg_version,
                rec.provider,
                rec.input_hash,
                rec.run_input_hash,
            ),
        )
        return dataclasses.replace(rec, id=row_id)

    def record_run(self, case: str, outcome: str, message: str = "") -> None:
        """Remember a run's outcome (``generated`` or ``error``) so an error shows on reopen.

        New outputs (``generated``) supersede the case's current decision in the same
        transaction: it judged outputs that are gone. It stays in the history, marked with
        the time it was superseded.
        """
        if outcome not in ("generated", "error"):
            raise ValueError(f"outcome must be 'generated' or 'error', got {outcome!r}")
        now = utc_now()
        more = []
        if outcome == "generated":
            more.append(
                (
                    "UPDATE decisions SET superseded=? WHERE case_name=? AND superseded=''",
                    (now, case),
                )
            )
        self._write(
            "INSERT INTO runs (case_name, outcome, message, time) VALUES (?,?,?,?)",
            (case, outcome, message, now),
            *more,
        )

    def set_frame(self, case: str, frame: CaseFrame | None, source: str = "given") -> None:
        """Store (or with None, forget) the case frame a technician set or accepted, in mm.

        The frame (centre on the preparation, occlusal and mesio-distal directions) is used by
        every later run of the case until it is changed or cleared; ``source`` says where it
        came from (picked, proposed, found, adjusted by hand), for Details and the records.
        """
        if frame is None:
            self._write("DELETE FROM centres WHERE case_name=?", (case,))
            return
        o = frame.occlusal if frame.occlusal is not None else (None,) * 3
        m = frame.mesial if frame.mesial is not None else (None,) * 3
        self._write(
            "INSERT OR REPLACE INTO centres (case_name, x, y, z, time, user, "
            + ", ".join(_FRAME_COLUMNS)
            + ", source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (case, *frame.center, utc_now(), current_user(), *o, *m, source),
        )

    def frames(self) -> dict[str, CaseFrame]:
        """Every stored case frame by case name; a row that no longer makes a valid frame
        (edited by hand) is left out rather than failing the whole workspace."""
        rows = self._read(
            "SELECT case_name, x, y, z, " + ", ".join(_FRAME_COLUMNS) + " FROM centres"
        )
        out: dict[str, CaseFrame] = {}
        for name, *vals in rows:
            o, m = vals[3:6], vals[6:9]
            try:
                out[name] = CaseFrame(
                    tuple(vals[:3]),
                    None if None in o else tuple(o),
                    None if None in m else tuple(m),
                )
            except (TypeError, ValueError):
                continue
        return out

    def frame_sources(self) -> dict[str, str]:
        """Where each stored case frame came from (``given`` for frames saved without one)."""
        rows = self._read("SELECT case_name, source FROM centres")
        return {name: source or "given" for name, source in rows}

    @staticmethod
    def _qa(row: sqlite3.Row | tuple) -> QaRecord:
        return QaRecord(
            id=row[0],
            case=row[1],
            decision=Decision(row[2]),
            note=row[3],
            time=row[4],
            user=row[5],
            crown_model=row[6],
            crown_version=row[7],
            seg_model=row[8],
            seg_version=row[9],
            provider=row[10],
            input_hash=row[11],
            run_input_hash=row[12],
            superseded=row[13],
        )

    _COLS = (
        "id, case_name, decision, note, time, user, crown_model, crown_version, seg_model,"
        " seg_version, provider, input_hash, run_input_hash, superseded"
    )

    def history(self, case: str | None = None) -> list[QaRecord]:
        """All decisions (of one case when given), superseded ones included, oldest first."""
        if case is None:
            rows = self._read(f"SELECT {self._COLS} FROM decisions ORDER BY id")
        else:
            rows = self._read(
                f"SELECT {self._COLS} FROM decisions WHERE case_name=? ORDER BY id", (case,)
            )
        return [self._qa(r) for r in rows]

    def latest_decisions(self) -> dict[str, QaRecord]:
        """The current decision of every case that has one: its latest, unless a later run
        superseded it."""
        rows = self._read(
            f"SELECT {self._COLS} FROM decisions WHERE id IN"
            " (SELECT MAX(id) FROM decisions GROUP BY case_name) AND superseded=''"
        )
        return {r[1]: self._qa(r) for r in rows}

    def latest_runs(self) -> dict[str, RunRecord]:
        rows = self._read(
            "SELECT case_name, outcome, message, time FROM runs WHERE id IN"
            " (SELECT MAX(id) FROM runs GROUP BY case_name)"
        )
        return {r[0]: RunRecord(*r) for r in rows}

    def export_csv(self, path: str | Path) -> int:
        """Write the QA report: ``path`` holds the current decision of each case, and
        ``<stem>-history.csv`` beside it every decision ever made, superseded ones marked.

        Both files are written as one set (neither changes if either cannot be written).
        Returns the number of cases in the current report.
        """
        path = Path(path)
        history_path = history_csv_path(path)
        check_not_input(path, [self.path])
        check_not_input(history_path, [self.path, path])
        records = self.history()
        current = sorted(self.latest_decisions().values(), key=lambda r: r.id or 0)
        data = {
            path: _csv_bytes(CSV_COLUMNS, current),
            history_path: _csv_bytes(HISTORY_COLUMNS, records),
        }
        commit_set([(p, lambda tmp, d=d: tmp.write_bytes(d)) for p, d in data.items()])
        return len(current)


def history_csv_path(report: Path) -> Path:
    """Where the full decision history goes beside a QA report."""
    return report.with_name(f"{report.stem}-history{report.suffix or '.csv'}")


def _csv_bytes(columns: list[str], records: Iterable[QaRecord]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        changed = {None: "unknown", True: "yes", False: "no"}[r.inputs_changed_since_run]
        row = {
            **dataclasses.asdict(r),
            "decision": r.decision.value,
            "inputs_changed_since_run": changed,
        }
        writer.writerow([row[c] for c in columns])
    return buf.getvalue().encode("utf-8")


def case_status(
    case: Case, decision: QaRecord | None = None, run: RunRecord | None = None
) -> CaseStatus:
    """A case's status on opening the workspace.

    A case that cannot run is an error. Otherwise the latest event wins: a run that failed after
    the last decision is an error, a run that produced new outputs after it needs a new look
    (generated); else the latest decision; else outputs on disk (generated); else new.
    """
    if case.problem:
        return CaseStatus.ERROR
    if run is not None and (decision is None or run.time > decision.time):
        if run.outcome == "error":
            return CaseStatus.ERROR
        if decision is not None and case.outputs_present():
            return CaseStatus.GENERATED
    if decision is not None:
        return decision.decision.status
    if case.outputs_present():
        return CaseStatus.GENERATED
    return CaseStatus.NEW


def error_text(case: Case, run: RunRecord | None) -> str | None:
    """Why a case is in error (to show on hover and in the details pane), or None."""
    if case.problem:
        return f"{case.folder}: {case.problem}"
    if run is not None and run.outcome == "error":
        return run.message
    return None


__all__ = [
    "Decision",
    "QaRecord",
    "QaStore",
    "RunRecord",
    "case_status",
    "current_user",
    "error_text",
    "history_csv_path",
]
