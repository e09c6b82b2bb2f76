"""Carries the demo models and the sample workspace into a (non-editable) wheel as ``app/data``.

Everything else is declared in ``pyproject.toml``. ``models/`` and ``resources/`` stay at the
repository root, where the checkout, the editable install and the PyInstaller bundle read them;
a wheel has no root, so ``app.core.paths.install_root`` looks in ``app/data`` instead.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MODEL_FILES = ("*.onnx", "*.json", "README.md")
SKIPPED = shutil.ignore_patterns("output", "*.sqlite*", ".*", "__pycache__")


class BuildPyWithData(build_py):
    """``build_py`` plus a copy of the models (not their training recipes) and resources."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        data = Path(self.build_lib) / "app" / "data"
        shutil.rmtree(data, ignore_errors=True)
        (data / "models").mkdir(parents=True)
        for pattern in MODEL_FILES:
            for f in sorted((ROOT / "models").glob(pattern)):
                shutil.copy2(f, data / "models" / f.name)
        shutil.copytree(ROOT / "resources", data / "resources", ignore=SKIPPED)


setup(cmdclass={"build_py": BuildPyWithData})
