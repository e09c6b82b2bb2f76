"""House rules that code review alone would miss."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "pyvistaqt", "qtpy")


def test_core_imports_no_qt() -> None:
    code = (
        "import sys, app.core, app.core.crown, app.core.runtime, app.core.manifest, "
        "app.core.crown.pipeline, app.core.segment.pipeline, app.core.workspace, "
        "app.core.qa_store, app.core.case_run, app.cli\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_source_never_names_qt_and_app_never_torch() -> None:
    for path in (ROOT / "app").rglob("*.py"):
        roots = _imported_roots(path)
        assert "torch" not in roots, f"{path.relative_to(ROOT)} imports torch"
        if "core" in path.relative_to(ROOT).parts:
            assert not roots & set(QT_MODULES), f"{path.relative_to(ROOT)} imports Qt"
