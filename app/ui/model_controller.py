"""The models and the execution provider the window runs with: loading, warm-up, the menu.

A model that does not load is skipped and named (Models menu, status bar tooltip, About);
the sessions are created in a worker so the window shows at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore

from app.core.errors import CrownscanError

from .settings import save_settings
from .workers import Tag, failure_text

if TYPE_CHECKING:
    from .main_window import MainWindow

PROVIDER_LABELS = {"tensorrt": "TensorRT", "cuda": "CUDA", "cpu": "CPU"}


def provider_label(providers: list[str]) -> str:
    """The provider a session really runs on (its first), as a technician reads it."""
    return PROVIDER_LABELS.get(providers[0], providers[0]) if providers else "—"


class ModelController(QtCore.QObject):
    """Finds the window's models, warms their sessions, and says which provider runs them."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.win = window
        self._checked: Any = None
        window.runner.done.connect(self._on_done)
        window.runner.failed.connect(self._on_failed)

    def load_models(self) -> None:
        """Find the crown and segmentation models in the configured folder; warm their sessions.

        Each kind takes the model chosen in the settings, else the folder's default; a model
        that does not load is skipped (see the Models menu for which and why).
        """
        from app.core.manifest import find_model

        folder = self.win.settings.models_path()
        self.win.crown_model = self.win.seg_model = None
        self.win.model_errors = []
        self._checked = None
        chosen = {
            "crown": self.win.settings.crown_model,
            "segmentation": self.win.settings.seg_model,
        }
        for kind in ("crown", "segmentation"):
            try:
                spec = find_model(None, kind, folder, preferred=chosen[kind] or None)
            except CrownscanError as exc:
                self.win.model_errors.append(str(exc))
                continue
            if kind == "crown":
                self.win.crown_model = spec
            else:
                self.win.seg_model = spec
        names = [
            f"{m.name.split('(')[0].strip()} v{m.version}"
            for m in (self.win.crown_model, self.win.seg_model)
            if m is not None
        ]
        self.win.models_label.setText("Models: " + (" · ".join(names) if names else "none"))
        tip = [
            f"{m.kind}: {m.name} v{m.version} ({m.manifest_path})"
            for m in (self.win.crown_model, self.win.seg_model)
            if m
        ]
        self.win.models_label.setToolTip("\n".join(tip + self.win.model_errors))
        if self.win.model_errors:
            self.win.models_label.setStyleSheet("color: #e0b84a")
            self.win.message(self.win.model_errors[0])
        else:
            self.win.models_label.setStyleSheet("")
        files = [f for m in (self.win.crown_model, self.win.seg_model) if m for f in m.onnx_files]
        pool = self.win.pool

        def warm(token, progress) -> dict:
            out = {}
            for f in files:
                token.check()
                s = pool.get(f)
                out[str(f)] = (list(s.providers), list(s.notes))
            return out

        if files:
            self.win.provider_label.setText("Provider: loading…")
            self.win.provider_label.setToolTip(
                "Creating the inference sessions (a first TensorRT start builds its engines,"
                " which can take minutes)"
            )
            self.win.runner.submit(self.win.new_tag("warmup", ""), warm)
        self.win.runs.update_actions()

    def models_folder(self) -> Any:
        """Every model of the models folder checked (usable and skipped), once per load."""
        from app.core.model_choice import check_folder

        if self._checked is None:
            try:
                self._checked = check_folder(self.win.settings.models_path())
            except CrownscanError as exc:
                self.win.message(str(exc))
                return None
        return self._checked

    def fill_models_menu(self) -> None:
        """The usable models per kind (checked: in use; choosing one keeps it in the settings)
        and, greyed out, every skipped model with the reason."""
        menu = self.win.models_menu
        menu.clear()
        found = self.models_folder()
        if found is None:
            menu.addAction("Models folder cannot be read").setEnabled(False)
            return
        current = {"crown": self.win.crown_model, "segmentation": self.win.seg_model}
        for kind, title in (("crown", "Crown models"), ("segmentation", "Segmentation models")):
            menu.addSection(title)
            for spec in found.of_kind(kind):
                act = menu.addAction(f"{spec.name} v{spec.version} ({spec.id})")
                act.setCheckable(True)
                act.setChecked(current[kind] is not None and current[kind].id == spec.id)
                act.triggered.connect(lambda _=False, k=kind, i=spec.id: self.choose_model(k, i))
            if not found.of_kind(kind):
                menu.addAction("none usable").setEnabled(False)
        if found.skipped:
            menu.addSection("Skipped")
            for skipped in found.skipped:
                act = menu.addAction(f"{skipped.manifest.name}: {skipped.reason}"[:160])
                act.setToolTip(f"{skipped.manifest}: {skipped.reason}")
                act.setEnabled(False)
            menu.setToolTipsVisible(True)

    def choose_model(self, kind: str, model_id: str) -> None:
        """Use ``model_id`` for ``kind`` from now on (kept in the settings)."""
        if kind == "crown":
            self.win.settings.crown_model = model_id
        else:
            self.win.settings.seg_model = model_id
        save_settings(self.win.settings, self.win.qsettings)
        self.load_models()

    def set_providers(self, providers: list[str], notes: list[str]) -> None:
        self.win.providers, self.win.provider_notes = providers, notes
        self.win.provider_label.setText(f"Provider: {provider_label(providers)}")
        tip = [f"in use: {', '.join(PROVIDER_LABELS.get(p, p) for p in providers)}"]
        tip += [f"requested: {', '.join(self.win.pool.config.preference)}"]
        tip += notes or ["no provider was dropped"]
        self.win.provider_label.setToolTip("\n".join(tip))

    def about_text(self) -> str:
        """Versions, models, providers and folders: what support asks for first."""
        import onnxruntime

        from app import __version__
        from app.core.logfile import current_log_file
        from app.core.paths import user_cache_dir
        from app.core.runtime import available_providers

        lines = [
            f"Crownscan {__version__}",
            f"ONNX Runtime {onnxruntime.__version__}; providers in this build: "
            + ", ".join(PROVIDER_LABELS.get(p, p) for p in available_providers()),
            f"Provider preference: {', '.join(self.win.pool.config.preference)}; in use: "
            + (
                ", ".join(PROVIDER_LABELS.get(p, p) for p in self.win.providers) or "not yet loaded"
            ),
        ]
        lines += [f"Note: {n}" for n in self.win.provider_notes]
        for m in (self.win.crown_model, self.win.seg_model):
            if m is not None:
                lines.append(f"{m.kind} model: {m.name} v{m.version} ({m.manifest_path})")
        lines += self.win.model_errors
        lines.append(f"Models folder: {self.win.settings.models_path()}")
        lines.append(f"Workspace: {self.win.workspace or '—'}")
        lines.append(f"Settings: {self.win.qsettings.fileName()}")
        lines.append(f"Log: {current_log_file() or 'not written'}")
        lines.append(f"Cache: {user_cache_dir()}")
        return "\n".join(lines)

    def _on_done(self, tag: Tag, result: Any) -> None:
        if tag.kind != "warmup":
            return
        win = self.win
        providers: list[str] = []
        notes: list[str] = []
        for p, n in result.values():
            providers += [x for x in p if x not in providers]
            notes += [x for x in n if x not in notes]
        self.set_providers(providers, notes)
        dropped = [x for x in notes if ": could not be initialised" in x]
        if dropped and providers and providers[0] != win.pool.config.preference[0]:
            win.message(f"Running on {provider_label(providers)}: {dropped[0]}")
            logging.getLogger("crownscan").warning("provider notes: %s", "; ".join(notes))
        win.models_ready.emit()

    def _on_failed(self, tag: Tag, exc: object, tb: str) -> None:
        if tag.kind != "warmup":
            return
        text = failure_text(exc)
        self.win.provider_label.setText("Provider: unavailable")
        self.win.provider_label.setToolTip(text)
        self.win.model_errors.append(text)
        self.win.message(text)
        self.win.models_ready.emit()


__all__ = ["PROVIDER_LABELS", "ModelController", "provider_label"]
