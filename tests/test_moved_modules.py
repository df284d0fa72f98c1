"""The module paths from before the regrouping still import, with a warning naming the new one."""

import importlib
import subprocess
import sys

import pytest

from bpclip_core._moved import MOVED_MODULES


def test_every_old_module_path_gives_the_module_at_its_new_place():
    for old, new in MOVED_MODULES.items():
        if old in ("model", "inputs", "weights"):  # package names now
            continue
        moved = importlib.import_module(f"bpclip_core.{new}")
        assert importlib.import_module(f"bpclip_core.{old}") is moved


def test_an_old_path_warns_and_the_engine_is_public():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "from bpclip_core import QualityEngine\n"
        "import bpclip_core.running.engine as new\n"
        "assert QualityEngine is new.QualityEngine\n"
        "try:\n    from bpclip_core.engine import QualityEngine\nexcept DeprecationWarning as w:\n    print(w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "bpclip_core.engine is now bpclip_core.running.engine" in out


@pytest.mark.parametrize("name", ["no_such_module"])
def test_unknown_names_still_fail(name):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"bpclip_core.{name}")
