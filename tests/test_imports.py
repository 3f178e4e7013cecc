"""Every public package imports on its own, first, in a fresh interpreter (no import cycles) and
exports what its __all__ names."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["lyra.render", "lyra.data", "lyra.models", "lyra.losses", "lyra.eval", "lyra.eval.protocol",
            "lyra.eval.report", "lyra.eval.baselines", "lyra.callbacks", "lyra.cli", "lyra.tools", "lyra.inference"]


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
