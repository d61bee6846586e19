"""The launcher, the CLI and the config run on login nodes: no module of theirs may import torch (seconds of start-up,
and torch need not be installed there). Every module is walked, so a new one cannot slip past a hand-kept list."""

import subprocess
import sys

# Packages whose every module must stay torch-free, and single modules (packages whose other modules need torch).
TORCH_FREE_PACKAGES = ["dsrun.cli", "dsrun.launcher", "dsrun.config", "dsrun.utils"]
TORCH_FREE_MODULES = ["dsrun", "dsrun.errors", "dsrun.console", "dsrun.user_files", "dsrun._git", "dsrun.alias",
                      "dsrun.accelerator", "dsrun.accelerator.selection"]

WALK = """
import importlib, pkgutil, sys
names = list(sys.argv[2:])
for package in sys.argv[1].split(","):
    names.append(package)
    module = importlib.import_module(package)
    names += [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")]
for name in names:
    if name.rsplit(".", 1)[-1] == "__main__":
        continue  # runs a program when imported; what it imports is walked on its own
    importlib.import_module(name)
    if "torch" in sys.modules:
        print("TORCH", name)
        break
else:
    print("CLEAN", len(names))
"""


def test_no_torch_free_module_imports_torch():
    out = subprocess.run([sys.executable, "-c", WALK, ",".join(TORCH_FREE_PACKAGES), *TORCH_FREE_MODULES],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.startswith("CLEAN"), f"importing {out.split()[-1]} imports torch"
    assert int(out.split()[1]) > 40  # the walk found the packages' modules
