"""The launcher and config run on login nodes: importing them must not import torch (seconds of start-up)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["dsrun", "dsrun.config", "dsrun.launcher.cli", "dsrun.launcher.resolve",
                                    "dsrun.launcher.spawn", "dsrun.launcher.render"])
def test_module_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
