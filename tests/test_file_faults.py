"""Disk and file-system faults on every write path: a full disk (ENOSPC injected into file
writes; a test cannot mount a small file system without root), refused files, folders given
as outputs, killed writers, the umask, output formats, and a reader that closed stdout."""

from __future__ import annotations

import builtins
import errno
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh

from app.cli import main
from app.core import case_run, fileio, workspace
from app.core.crown.meshio import Mesh
from app.core.errors import PipelineError
from tests.onnx_builders import identity_crown_model
from tests.test_model_faults import _box_stl, _crown_folder

ROOT = Path(__file__).resolve().parents[1]


class _LimitedFile:
    """A file whose writes fail with ``err`` once ``state['left']`` bytes are used up."""

    def __init__(self, f, state: dict) -> None:
        self._f, self._state = f, state

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if n > self._state["left"]:
            raise OSError(self._state["errno"], os.strerror(self._state["errno"]))
        self._state["left"] -= n
        return self._f.write(data)

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def fail_writes(monkeypatch, left: int = 0, err: int = errno.ENOSPC) -> dict:
    """Make writes into Crownscan's temp files fail with ``err`` after ``left`` bytes in all
    (``open`` is replaced for pathlib, Pillow and plain ``open`` alike)."""
    real = io.open
    state = {"left": left, "errno": err}

    def fake_open(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        if any(m in mode for m in "wax+") and str(file).endswith(fileio.TEMP_SUFFIX):
            return _LimitedFile(f, state)
        return f

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    return state


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(fileio.TEMP_SUFFIX))


def _crown_args(tmp_path: Path, out: Path) -> list[str]:
    manifest = _crown_folder(tmp_path, identity_crown_model())
    return ["crown", str(_box_stl(tmp_path)), "-o", str(out), "--model", str(manifest),
            "--providers", "cpu", "--threads", "1"]  # fmt: skip


def test_full_disk_names_the_output_and_the_cause(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out" / "crown.stl"
    fail_writes(monkeypatch, left=1000)
    code = main(_crown_args(tmp_path, out))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and err == [f"error: {out}: cannot write: no space left on the disk"]
    assert not out.exists() and _temps(out.parent) == []


@pytest.mark.parametrize(
    ("err", "cause"),
    [
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EDQUOT, "disk quota exceeded"),
    ],
)
def test_refused_writes_name_their_cause(tmp_path, monkeypatch, err, cause):
    fail_writes(monkeypatch, err=err)
    with pytest.raises(PipelineError) as exc:
        fileio.atomic_write_bytes(tmp_path / "x.csv", b"data")
    assert str(exc.value) == f"{tmp_path / 'x.csv'}: cannot write: {cause}"


def test_output_that_is_a_folder_is_refused_before_work(tmp_path, capsys):
    out = tmp_path / "already-a-folder"
    out.mkdir()
    code = main(_crown_args(tmp_path, out))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {out}: is a folder; give a file path to write"]
    with pytest.raises(PipelineError, match="cannot write: is a folder, not a file"):
        fileio.atomic_write_bytes(out, b"x")


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".obj"])
def test_crown_format_follows_the_suffix(tmp_path, capsys, suffix):
    out = tmp_path / f"crown{suffix}"
    assert main(_crown_args(tmp_path, out)) == 0
    faces = int(capsys.readouterr().out.split("(")[1].split()[0])
    head = out.read_bytes()[:16]
    assert head.startswith({".stl": b"crownscan", ".ply": b"ply\n", ".obj": b"# crownscan"}[suffix])
    back = trimesh.load(out, process=False, force="mesh")
    assert len(back.faces) == faces


def test_unknown_output_suffix_is_refused(tmp_path, capsys):
    out = tmp_path / "crown.xyz"
    assert main(_crown_args(tmp_path, out)) == 2
    assert "unsupported output format '.xyz' (use .stl, .ply, .obj)" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        fileio.atomic_write_bytes(tmp_path / "crown.stl", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "crown.stl").stat().st_mode & 0o777 == 0o666 & ~umask


def _set(values: int):
    mesh = trimesh.creation.box((5.0, 5.0, 5.0))
    mesh = Mesh(np.asarray(mesh.vertices) * values, np.asarray(mesh.faces, np.int64))
    labels = np.full((20, 30), values % 3, np.uint8)
    image = np.full((20, 30, 3), 40 * values, np.uint8)
    result = SimpleNamespace(labels=labels, image=image)
    return mesh, [
        case_run.ImageResult(Path("a.png"), result),
        case_run.ImageResult(Path("b.png"), result),
    ]


def _case(tmp_path: Path) -> workspace.Case:
    folder = tmp_path / "case"
    folder.mkdir()
    return workspace.Case("case", folder, folder / "scan.stl", (folder / "a.png", folder / "b.png"))


def _outputs(case: workspace.Case) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(case.output_dir.iterdir())}


SEG = SimpleNamespace(palette=[(0, 0, 0), (200, 0, 0), (0, 200, 0)])


@pytest.mark.parametrize("share", [0.0, 0.4, 0.9])
def test_full_disk_mid_case_leaves_the_previous_set_whole(tmp_path, monkeypatch, share):
    case = _case(tmp_path)
    mesh, images = _set(1)
    case_run.write_case_outputs(case, mesh, images, SEG, 0.5, {"run": 1})
    before = _outputs(case)
    assert len(before) == 6  # crown, 2 masks, 2 overlays, run.json
    mesh, images = _set(2)
    fail_writes(monkeypatch, left=int(share * sum(len(b) for b in before.values())))
    with pytest.raises(PipelineError, match="no space left on the disk"):
        case_run.write_case_outputs(case, mesh, images, SEG, 0.5, {"run": 2})
    assert _outputs(case) == before


def test_failed_rename_part_way_puts_the_earlier_files_back(tmp_path, monkeypatch):
    case = _case(tmp_path)
    mesh, images = _set(1)
    case_run.write_case_outputs(case, mesh, images, SEG, 0.5, {"run": 1})
    before = _outputs(case)
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    mesh, images = _set(2)
    with pytest.raises(PipelineError, match="input/output error"):
        case_run.write_case_outputs(case, mesh, images, SEG, 0.5, {"run": 2})
    monkeypatch.undo()
    assert _outputs(case) == before


def test_temp_files_of_killed_writers_are_cleaned_on_the_next_write(tmp_path):
    """Kill -9 writers mid-write; the next write into the folder removes their temp files."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from app.core.fileio import atomic_write
        def write(tmp):
            tmp.write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(60)
        atomic_write(Path({str(tmp_path / "crown.stl")!r}), write)
        """
    )
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"writing\n"
        proc.kill()
        proc.wait()
        # each writer removed the temp file of the one killed before it
        assert len(_temps(tmp_path)) == 1 and not (tmp_path / "crown.stl").exists()
    fileio.atomic_write_bytes(tmp_path / "other.stl", b"x")
    assert _temps(tmp_path) == []


def test_temp_file_of_a_live_writer_is_kept(tmp_path):
    live = tmp_path / f".x.stl.{fileio._HOST}-{os.getppid()}-0000{fileio.TEMP_SUFFIX}"
    live.write_bytes(b"busy")
    assert fileio.clean_stale_temps(tmp_path) == 0 and live.exists()


def test_closed_stdout_pipe_is_not_an_error(tmp_path):
    from tests.test_manifest import CROWN, loadable, write

    write(tmp_path, "crown_x.json", CROWN)
    loadable(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "models", "--models", str(tmp_path), "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == ""
