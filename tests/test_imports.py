"""The packages' layers (the import-linter contract in pyproject.toml, docs/conventions.md), and every
public package importing on its own, first, in a fresh interpreter and exporting what its __all__ names."""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["lyra.render", "lyra.data", "lyra.models", "lyra.losses", "lyra.eval", "lyra.data.splits",
            "lyra.eval.report", "lyra.eval.baselines", "lyra.callbacks", "lyra.cli", "lyra.tools", "lyra.inference"]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter's contract (pyproject.toml under ``root``) over the ``lyra`` package under ``root``."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_layers_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_catches_an_import_that_goes_up_a_layer(tmp_path):
    """The same contract over a copy of lyra where the renderer imports the student (a cycle)."""
    shutil.copytree(ROOT / "lyra", tmp_path / "lyra", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    renderer = tmp_path / "lyra" / "render" / "renderer.py"
    renderer.write_text(renderer.read_text() + "\nfrom lyra.models.student import StudentModule  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "lyra.render is not allowed to import lyra.models" in result.stdout


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_each_package_imports_first_in_a_fresh_interpreter():
    code = "import importlib, sys; importlib.import_module(sys.argv[1])"
    failed = {}
    for name in PACKAGES:
        r = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120)
        if r.returncode:
            failed[name] = r.stderr.strip().splitlines()[-1]
    assert not failed, failed


@pytest.mark.parametrize("name", ["lyra.render", "lyra.data", "lyra.models", "lyra.losses", "lyra.eval"])
def test_all_names_exist(name):
    module = importlib.import_module(name)
    assert module.__all__ and all(hasattr(module, n) for n in module.__all__)


def test_public_modules_document_every_setting_in_args():
    """diffusers-style class docs: an ``Args:`` section naming every constructor argument (an
    inherited constructor is documented where it is defined)."""
    import inspect
    import re

    from lyra.data import ClipDataModule
    from lyra.losses import RenderingLoss
    from lyra.models import (
        BodyConfig,
        DynamicGaussianDecoder,
        StaticGaussianDecoder,
        StudentModule,
        TeacherModule,
    )
    from lyra.render import GaussianRenderer

    for cls in (StaticGaussianDecoder, DynamicGaussianDecoder, StudentModule, TeacherModule, BodyConfig,
                RenderingLoss, GaussianRenderer, ClipDataModule):
        owner = next(c for c in cls.__mro__ if "__init__" in vars(c))
        doc = (owner.__doc__ or "") + (owner.__init__.__doc__ or "")
        assert "Args:" in doc, f"{owner.__name__} has no Args: section"
        args = doc.split("Args:", 1)[1]
        params = [p for p in inspect.signature(owner.__init__).parameters if p not in ("self", "args", "kwargs")]
        missing = [p for p in params if not re.search(rf"\b{p}\b", args)]
        assert not missing, f"{owner.__name__}'s Args: does not describe {missing}"
