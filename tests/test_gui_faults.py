"""The window under faults: a decided case is never re-run silently, a report that cannot be
written is a message, and skipped models are listed with why."""

from __future__ import annotations

import csv
import shutil

import pytest
from gui_fixtures import *  # noqa: F403
from gui_fixtures import wait_for
from PySide6 import QtWidgets

from app.core import qa_store
from app.core.qa_store import Decision

pytestmark = pytest.mark.gui


def _answer(monkeypatch, button) -> list[str]:
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(text)
        return button

    monkeypatch.setattr(QtWidgets.QMessageBox, "question", question)
    return asked


def _run(qtbot, w, name: str) -> str:
    with qtbot.waitSignal(w.run_finished, timeout=120000) as blocker:
        w.runs.run_current()
    return blocker.args[1]


def test_rerun_of_a_decided_case_asks_and_supersedes(make_window, fake_workspace, qtbot, tmp_path,
                                                     monkeypatch):  # fmt: skip
    w = make_window(fake_workspace)
    w.select_case("case_001")
    wait_for(qtbot, lambda: w._view_tag is None)
    assert _answer(monkeypatch, QtWidgets.QMessageBox.StandardButton.Yes) == []
    assert _run(qtbot, w, "case_001") == "generated"
    w.decisions.decide(Decision.APPROVED, "fine")
    assert w.case_list.status_text("case_001") == "approved"

    asked = _answer(monkeypatch, QtWidgets.QMessageBox.StandardButton.No)
    w.runs.run_current()
    assert len(asked) == 1 and "case_001 was approved" in asked[0]
    assert w.runs.tag is None and w.case_list.status_text("case_001") == "approved"

    asked = _answer(monkeypatch, QtWidgets.QMessageBox.StandardButton.Yes)
    assert _run(qtbot, w, "case_001") == "generated"
    assert len(asked) == 1
    assert w.case_list.status_text("case_001") == "generated"
    assert w.qa.saved_label.text().startswith("Superseded: approved")
    assert "superseded" in w.qa.history.item(0).text()
    out = tmp_path / "qa.csv"
    assert w.decisions.export_report(out) == 0
    history = list(csv.DictReader(qa_store.history_csv_path(out).open(encoding="utf-8")))
    assert [(r["case"], r["decision"], bool(r["superseded"])) for r in history] == [
        ("case_001", "approved", True)
    ]


def test_report_that_cannot_be_written_is_a_message(make_window, fake_workspace, monkeypatch):
    w = make_window(fake_workspace)
    shown: list[str] = []
    monkeypatch.setattr(
        QtWidgets.QMessageBox, "warning", lambda parent, title, text, *a: shown.append(text)
    )
    folder = fake_workspace / "a-folder.csv"
    folder.mkdir()
    assert w.decisions.export_report(folder) == -1
    assert len(shown) == 1 and str(folder) in shown[0] and "is a folder" in shown[0]
    assert "QA report not written" in w.message_label.text()


def test_model_menu_lists_skipped_models_with_why(make_window, fake_models, tmp_path):
    models = shutil.copytree(fake_models, tmp_path / "models")
    shutil.copy(models / "sphere_crown.json", models / "aa_broken.json")
    (models / "broken.onnx").write_bytes(b"not a model")
    text = (models / "aa_broken.json").read_text().replace("sphere_crown.onnx", "broken.onnx")
    (models / "aa_broken.json").write_text(text)
    w = make_window(models=models)
    assert w.crown_model is not None and w.crown_model.id == "sphere_crown"
    w.models.fill_models_menu()
    actions = {a.text(): a for a in w.models_menu.actions() if a.text()}
    skipped = [t for t in actions if t.startswith("aa_broken.json: ")]
    assert len(skipped) == 1 and "cannot load model" in skipped[0]
    assert not actions[skipped[0]].isEnabled()
    usable = [a for t, a in actions.items() if "(sphere_crown)" in t]
    assert len(usable) == 1 and usable[0].isChecked()
