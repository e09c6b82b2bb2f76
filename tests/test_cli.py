"""The CLI contract shared by every verb: JSON on stdout, one error line, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.cli import main
from tests.test_manifest import CROWN, SEG, loadable, write

ROOT = Path(__file__).resolve().parents[1]


def test_models_lists_json_and_warns_on_bad(tmp_path: Path, capsys) -> None:
    write(tmp_path, "crown_x.json", CROWN)
    write(tmp_path, "seg_y.json", SEG)
    write(tmp_path, "broken.json", {**SEG, "input_size": "big"})
    loadable(tmp_path)
    assert main(["models", "--models", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(m["id"], m["kind"]) for m in out["models"]] == [
        ("crown_x", "crown"),
        ("seg_y", "segmentation"),
    ]
    assert len(out["errors"]) == 1 and "'input_size'" in out["errors"][0]
    assert main(["models", "--models", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "crown_x" in captured.out and captured.err.startswith("warning: ")


def test_missing_models_folder_is_exit_3(tmp_path: Path, capsys) -> None:
    assert main(["models", "--models", str(tmp_path / "none")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "does not exist" in err


def test_bad_provider_name_is_exit_2(tmp_path: Path, capsys) -> None:
    write(tmp_path, "crown_x.json", CROWN)
    scan = tmp_path / "scan.stl"
    scan.write_text("solid x\nendsolid x\n")
    code = main(
        [
            "crown",
            str(scan),
            "-o",
            str(tmp_path / "o.stl"),
            "--models",
            str(tmp_path),
            "--providers",
            "gpu",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --providers takes tensorrt,cuda,cpu")


def test_error_has_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app", "models", "--models", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none'}: models folder does not exist"
    ]


def test_bundled_models_listed() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app", "models", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    kinds = {m["kind"] for m in json.loads(proc.stdout)["models"]}
    assert kinds == {"crown", "segmentation"}


def test_every_command_takes_debug():
    """main() reads --debug on every error; a command without it turns a clear one-line error
    into an AttributeError (serve-repo lost it once in a merge)."""
    import argparse

    from app.cli import COMMANDS, build_parser

    def leaves(parser: argparse.ArgumentParser, name: str):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield name, parser
        for sub in subs:
            for child, p in sub.choices.items():
                yield from leaves(p, f"{name} {child}".strip())

    found = dict(leaves(build_parser(), ""))
    assert {name.split()[0] for name in found} == set(COMMANDS)
    assert [n for n, p in found.items() if "--debug" not in p._option_string_actions] == []
