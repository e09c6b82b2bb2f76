"""User settings kept in QSettings (organization "Crownscan"), and the dialog that edits them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from app.core.distances import DistanceLimits
from app.core.paths import bundled_models_dir
from app.core.remote import ENV_VAR, ServerConfig, make_pool, parse_server, server_from_env
from app.core.runtime import RuntimeConfig, SessionPool

ORGANIZATION = "Crownscan"
APPLICATION = "Crownscan"

PROVIDER_CHOICES: dict[str, tuple[str, ...]] = {
    "TensorRT, then CUDA, then CPU": ("tensorrt", "cuda", "cpu"),
    "CUDA, then CPU": ("cuda", "cpu"),
    "CPU only": ("cpu",),
}
SMOOTHING_CHOICES = ("model", "none", "laplacian", "taubin")
ROI_CHOICES = ("model", "on", "off")
MAX_RECENT = 8


@dataclass
class AppSettings:
    """Every setting the window uses, with defaults that need no configuration.

    ``models_dir`` empty means the bundled models; ``crown_model`` / ``seg_model`` name the
    model id to use by default (empty: the folder's default); ``resolution`` 0 means the model's
    own;
    ``smoothing`` "model" keeps the manifest's smoothing; ``roi`` "model" follows the manifest.
    ``server`` (a Triton server URL; empty: ``$CROWNSCAN_SERVER``, else this machine) runs
    the models remotely, falling back to this machine only with ``server_fallback``.
    ``contact_max_mm`` and ``clearance_min_mm`` are the distance map's limits.
    """

    models_dir: str = ""
    crown_model: str = ""
    seg_model: str = ""
    providers: tuple[str, ...] = ("tensorrt", "cuda", "cpu")
    cpu_threads: int = 0
    server: str = ""
    server_fallback: bool = False
    server_timeout_s: int = 60
    resolution: int = 0
    smoothing: str = "model"
    smoothing_iterations: int = 10
    roi: str = "model"
    overlay_opacity: float = 0.5
    overlay_mode: str = "fill"
    contact_max_mm: float = DistanceLimits.contact_max_mm
    clearance_min_mm: float = DistanceLimits.clearance_min_mm
    recent_workspaces: list[str] = field(default_factory=list)
    last_workspace: str = ""

    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else bundled_models_dir()

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(preference=tuple(self.providers), intra_op_threads=self.cpu_threads)

    def server_config(self) -> ServerConfig | None:
        """The Triton server to use: this setting, else ``$CROWNSCAN_SERVER``, else none."""
        kw = {"timeout_s": self.server_timeout_s, "fallback": self.server_fallback}
        return parse_server(self.server, **kw) if self.server else server_from_env(**kw)

    def session_pool(self) -> SessionPool:
        """The pool runs use; a malformed ``$CROWNSCAN_SERVER`` is logged and ignored."""
        try:
            server = self.server_config()
        except ValueError as exc:
            logging.getLogger("crownscan").warning("%s: %s (running locally)", ENV_VAR, exc)
            server = None
        return make_pool(self.runtime_config(), server)

    def distance_limits(self) -> DistanceLimits:
        return DistanceLimits(self.contact_max_mm, self.clearance_min_mm)

    def roi_flag(self) -> bool | None:
        return {"model": None, "on": True, "off": False}[self.roi]

    def resolution_or_none(self) -> int | None:
        return self.resolution if self.resolution > 0 else None

    def add_recent(self, workspace: str | Path) -> None:
        w = str(Path(workspace).resolve())
        self.recent_workspaces = [w] + [r for r in self.recent_workspaces if r != w]
        del self.recent_workspaces[MAX_RECENT:]
        self.last_workspace = w


def sample_workspace_copy() -> Path:
    """A writable copy of the bundled sample workspace in the user's data folder.

    The bundled one lives in the install folder (read-only in an installed app, and inside the
    checkout when run from source): runs and QA decisions must not be written there. Cases
    are copied once; an existing copy (with the technician's outputs and decisions) is kept,
    and one left by an older release in the doubled ``Crownscan/Crownscan`` folder is moved.
    """
    import shutil

    from app.core.paths import legacy_user_data_dir, sample_workspace_dir, user_data_dir

    src = sample_workspace_dir()
    if not src.is_dir():
        return src
    dst = user_data_dir() / "sample-workspace"
    legacy = legacy_user_data_dir() / "sample-workspace"
    try:
        if legacy.is_dir() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            legacy.rename(dst)
        for case in sorted(p for p in src.iterdir() if p.is_dir()):
            target = dst / case.name
            if not target.exists():
                shutil.copytree(
                    case, target, ignore=shutil.ignore_patterns("output", "*.sqlite*", ".*")
                )
    except OSError:
        return dst if dst.is_dir() else src
    return dst


def qsettings() -> QtCore.QSettings:
    """The user's settings: an INI file in the per-user location on every platform."""
    return QtCore.QSettings(
        QtCore.QSettings.Format.IniFormat,
        QtCore.QSettings.Scope.UserScope,
        ORGANIZATION,
        APPLICATION,
    )


def _as_list(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]  # type: ignore[union-attr]


def load_settings(store: QtCore.QSettings | None = None) -> AppSettings:
    """Read settings, falling back to the default for anything missing or malformed."""
    s = store or qsettings()
    out = AppSettings()
    for f in fields(AppSettings):
        if not s.contains(f.name):
            continue
        raw = s.value(f.name)
        default = getattr(out, f.name)
        try:
            if isinstance(default, bool):
                value: object = str(raw).lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            elif isinstance(default, tuple):
                value = tuple(_as_list(raw))
            elif isinstance(default, list):
                value = _as_list(raw)
            else:
                value = str(raw)
        except (TypeError, ValueError):
            continue
        setattr(out, f.name, value)
    if tuple(out.providers) not in PROVIDER_CHOICES.values():
        out.providers = AppSettings.providers
    if out.smoothing not in SMOOTHING_CHOICES:
        out.smoothing = "model"
    if out.roi not in ROI_CHOICES:
        out.roi = "model"
    if out.overlay_mode not in ("fill", "contour"):
        out.overlay_mode = "fill"
    out.overlay_opacity = min(1.0, max(0.0, out.overlay_opacity))
    try:
        out.distance_limits()
    except ValueError:
        out.contact_max_mm = AppSettings.contact_max_mm
        out.clearance_min_mm = AppSettings.clearance_min_mm
    out.server_timeout_s = max(1, out.server_timeout_s)
    try:
        parse_server(out.server) if out.server else None
    except ValueError:
        out.server = ""
    return out


def save_settings(settings: AppSettings, store: QtCore.QSettings | None = None) -> None:
    s = store or qsettings()
    for f in fields(AppSettings):
        value = getattr(settings, f.name)
        s.setValue(f.name, list(value) if isinstance(value, tuple | list) else value)
    s.sync()


class SettingsDialog(QtWidgets.QDialog):
    """Edits a copy of the settings; ``result_settings()`` returns it after Accept."""

    def __init__(self, settings: AppSettings, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._settings = AppSettings(
            **{f.name: getattr(settings, f.name) for f in fields(settings)}
        )
        form = QtWidgets.QFormLayout(self)

        row = QtWidgets.QHBoxLayout()
        self.models_edit = QtWidgets.QLineEdit(settings.models_dir)
        self.models_edit.setPlaceholderText(f"bundled ({bundled_models_dir().name}/)")
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.models_edit, 1)
        row.addWidget(browse)
        form.addRow("Models folder", row)

        self.provider_combo = QtWidgets.QComboBox()
        self.provider_combo.addItems(list(PROVIDER_CHOICES))
        for i, chain in enumerate(PROVIDER_CHOICES.values()):
            if chain == tuple(settings.providers):
                self.provider_combo.setCurrentIndex(i)
        form.addRow("Provider preference", self.provider_combo)

        self.threads_spin = QtWidgets.QSpinBox()
        self.threads_spin.setRange(0, 256)
        self.threads_spin.setSpecialValueText("automatic")
        self.threads_spin.setValue(settings.cpu_threads)
        form.addRow("CPU threads", self.threads_spin)

        row = QtWidgets.QHBoxLayout()
        self.server_edit = QtWidgets.QLineEdit(settings.server)
        self.server_edit.setPlaceholderText("this workstation (e.g. grpc://gpu-server:8001)")
        self.fallback_check = QtWidgets.QCheckBox("fall back to this workstation")
        self.fallback_check.setChecked(settings.server_fallback)
        row.addWidget(self.server_edit, 1)
        row.addWidget(self.fallback_check)
        form.addRow("Triton server", row)

        self.resolution_spin = QtWidgets.QSpinBox()
        self.resolution_spin.setRange(0, 1024)
        self.resolution_spin.setSpecialValueText("model default")
        self.resolution_spin.setValue(settings.resolution)
        form.addRow("Generation resolution", self.resolution_spin)

        row = QtWidgets.QHBoxLayout()
        self.smoothing_combo = QtWidgets.QComboBox()
        self.smoothing_combo.addItems(list(SMOOTHING_CHOICES))
        self.smoothing_combo.setCurrentText(settings.smoothing)
        self.smoothing_iter = QtWidgets.QSpinBox()
        self.smoothing_iter.setRange(0, 200)
        self.smoothing_iter.setValue(settings.smoothing_iterations)
        self.smoothing_iter.setSuffix(" iterations")
        row.addWidget(self.smoothing_combo, 1)
        row.addWidget(self.smoothing_iter)
        form.addRow("Smoothing", row)

        self.roi_combo = QtWidgets.QComboBox()
        self.roi_combo.addItems(list(ROI_CHOICES))
        self.roi_combo.setCurrentText(settings.roi)
        form.addRow("ROI crop (segmentation)", self.roi_combo)

        self.opacity_spin = QtWidgets.QDoubleSpinBox()
        self.opacity_spin.setRange(0.0, 1.0)
        self.opacity_spin.setSingleStep(0.05)
        self.opacity_spin.setValue(settings.overlay_opacity)
        self.mode_combo = QtWidgets.QComboBox()
        self.mode_combo.addItems(["fill", "contour"])
        self.mode_combo.setCurrentText(settings.overlay_mode)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.opacity_spin)
        row.addWidget(self.mode_combo)
        form.addRow("Overlay opacity / mode", row)

        self.contact_spin = self._mm_spin(settings.contact_max_mm, 0.01, 2.0)
        self.contact_spin.setToolTip("Proximal contact: distance to a neighbour from 0 to this")
        self.clearance_spin = self._mm_spin(settings.clearance_min_mm, 0.1, 4.0)
        self.clearance_spin.setToolTip("Occlusal clearance: least distance to the antagonist")
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("contact 0 –"))
        row.addWidget(self.contact_spin)
        row.addWidget(QtWidgets.QLabel("clearance ≥"))
        row.addWidget(self.clearance_spin)
        form.addRow("Distance map limits", row)

        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    @staticmethod
    def _mm_spin(value: float, low: float, high: float) -> QtWidgets.QDoubleSpinBox:
        spin = QtWidgets.QDoubleSpinBox()
        spin.setDecimals(2)
        spin.setRange(low, high)
        spin.setSingleStep(0.05)
        spin.setSuffix(" mm")
        spin.setValue(value)
        return spin

    def accept(self) -> None:
        text = self.server_edit.text().strip()
        try:
            if text:
                parse_server(text)
        except ValueError as exc:
            QtWidgets.QMessageBox.warning(self, "Triton server", str(exc))
            return
        super().accept()

    def _browse(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Models folder")
        if folder:
            self.models_edit.setText(folder)

    def result_settings(self) -> AppSettings:
        s = self._settings
        s.models_dir = self.models_edit.text().strip()
        s.providers = PROVIDER_CHOICES[self.provider_combo.currentText()]
        s.cpu_threads = self.threads_spin.value()
        s.server = self.server_edit.text().strip()
        s.server_fallback = self.fallback_check.isChecked()
        s.resolution = self.resolution_spin.value()
        s.smoothing = self.smoothing_combo.currentText()
        s.smoothing_iterations = self.smoothing_iter.value()
        s.roi = self.roi_combo.currentText()
        s.overlay_opacity = self.opacity_spin.value()
        s.overlay_mode = self.mode_combo.currentText()
        s.contact_max_mm = self.contact_spin.value()
        s.clearance_min_mm = self.clearance_spin.value()
        return s
