"""Atomic output writing: a failed write leaves the old file and no temp file behind."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from app.core.errors import InputError, PipelineError
from app.core.fileio import TEMP_SUFFIX, atomic_write, atomic_write_bytes, check_not_input


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def test_a_write_that_fails_midway_keeps_the_old_file_and_removes_its_temp(tmp_path):
    out = tmp_path / "crown.stl"
    out.write_bytes(b"old crown")
    seen = []

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half a cr")
        seen.append(tmp)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(PipelineError, match="no space left") as err:
        atomic_write(out, half_then_fail)
    assert "crown.stl" in str(err.value)
    assert out.read_bytes() == b"old crown"
    assert seen and seen[0].parent == tmp_path and not seen[0].exists()
    assert _leftovers(tmp_path) == []


def test_an_interrupted_write_cleans_up_too(tmp_path):
    """KeyboardInterrupt (not an Exception) mid-write: no temp file, no new file."""
    out = tmp_path / "sub" / "mask.png"

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(out, interrupted)
    assert not out.exists() and _leftovers(out.parent) == []


def test_a_failed_rename_removes_the_temp_file(tmp_path):
    """The target is a folder, so the final rename fails after the temp file was written."""
    out = tmp_path / "run.json"
    out.mkdir()
    with pytest.raises(PipelineError, match="is a folder"):
        atomic_write_bytes(out, b"{}")
    assert out.is_dir() and _leftovers(tmp_path) == []


def test_an_unwritable_folder_is_a_pipeline_error_naming_the_file(tmp_path):
    blocker = tmp_path / "output"
    blocker.write_bytes(b"a file where the output folder should be")
    with pytest.raises(PipelineError, match="cannot write") as err:
        atomic_write_bytes(blocker / "crown.stl", b"x")
    assert "crown.stl" in str(err.value)


def test_a_successful_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    out = tmp_path / "report.csv"
    out.write_bytes(b"old")
    atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new" and _leftovers(tmp_path) == []


def test_output_that_is_an_input_is_refused_through_a_link(tmp_path):
    scan = tmp_path / "scan.stl"
    scan.write_bytes(b"solid")
    link = tmp_path / "link.stl"
    link.symlink_to(scan)
    with pytest.raises(InputError, match="output path is the input file"):
        check_not_input(link, [scan])
    check_not_input(tmp_path / "crown.stl", [scan])
