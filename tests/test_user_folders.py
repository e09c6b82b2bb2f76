"""Per-user folders (platformdirs, no doubled organisation folder) and the rotating log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.core import logfile, paths


def test_user_folders_have_one_application_folder(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if not str(paths.user_data_dir()).startswith(str(tmp_path)):
        pytest.skip("platformdirs ignores XDG variables on this platform")
    for folder in (paths.user_data_dir(), paths.user_log_dir(), paths.user_cache_dir()):
        rel = folder.relative_to(tmp_path).parts
        assert rel.count("Crownscan") == 1, folder
    assert paths.legacy_user_data_dir() == tmp_path / "data" / "Crownscan" / "Crownscan"


def test_old_sample_workspace_is_moved_with_its_decisions(monkeypatch, tmp_path) -> None:
    from app.ui.settings import sample_workspace_copy

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    bundled = tmp_path / "bundle"
    (bundled / "case_a").mkdir(parents=True)
    (bundled / "case_a" / "scan.ply").write_text("ply")
    (bundled / "case_b").mkdir()
    (bundled / "case_b" / "scan.ply").write_text("ply")
    monkeypatch.setattr(paths, "sample_workspace_dir", lambda: bundled)
    old = paths.legacy_user_data_dir() / "sample-workspace"
    (old / "case_a" / "output").mkdir(parents=True)
    (old / "case_a" / "output" / "crown.stl").write_text("technician's run")
    (old / "crownscan-qa.sqlite").write_bytes(b"decisions")

    copy = sample_workspace_copy()
    assert copy == paths.user_data_dir() / "sample-workspace"
    assert (copy / "crownscan-qa.sqlite").read_bytes() == b"decisions"
    assert (copy / "case_a" / "output" / "crown.stl").read_text() == "technician's run"
    assert (copy / "case_b" / "scan.ply").is_file()
    assert not old.exists()


def test_log_file_rotates_and_a_second_setup_replaces_the_handler(tmp_path: Path) -> None:
    root = logging.getLogger()
    try:
        first = logfile.setup_logging(tmp_path / "a")
        path = logfile.setup_logging(tmp_path / "b")
        assert first == tmp_path / "a" / "crownscan.log"
        assert path == logfile.current_log_file() == tmp_path / "b" / "crownscan.log"
        mine = [h for h in root.handlers if isinstance(h, logfile._CrownscanFileHandler)]
        assert len(mine) == 1
        line = "x" * 1000
        for _ in range(3 * logfile.MAX_BYTES // 1000):
            logging.getLogger("crownscan.test").warning(line)
        assert path.stat().st_size <= logfile.MAX_BYTES
        assert (tmp_path / "b" / "crownscan.log.1").is_file()
    finally:
        logfile.stop_logging()
    assert not [h for h in root.handlers if isinstance(h, logfile._CrownscanFileHandler)]


def test_unwritable_log_folder_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert logfile.setup_logging(blocker / "logs") is None
    assert logfile.current_log_file() is None
