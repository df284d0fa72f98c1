"""The module paths from before the regrouping still import, with a warning naming the new one."""

import importlib
import subprocess
import sys
import warnings

import pytest

from bpclip_core._moved import MOVED_MODULES


def test_every_old_module_path_gives_the_module_at_its_new_place():
    for old, new in MOVED_MODULES.items():
        if old in ("model", "inputs", "weights"):  # package names now
            continue
        moved = importlib.import_module(f"bpclip_core.{new}")
        sys.modules.pop(f"bpclip_core.{old}", None)  # warns on every first import
        with pytest.warns(DeprecationWarning, match=f"is now bpclip_core.{new}"):
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


@pytest.mark.parametrize(
    ("package", "member", "new_module"),
    [
        ("inputs", "check_images", "inputs.checks"),
        ("weights", "load_torchvision_weights", "model.pretrained"),
        ("model", "QualityOutput", "model.bpclip"),
    ],
)
def test_the_old_modules_that_are_packages_now_keep_their_members(package, member, new_module):
    old = importlib.import_module(f"bpclip_core.{package}")
    new = importlib.import_module(f"bpclip_core.{new_module}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert getattr(old, member) is getattr(new, member)
    if package != "model":  # the model package exports its classes itself, without a warning
        assert f"is now bpclip_core.{new_module}.{member}" in str(caught[0].message)


def test_a_package_does_not_lend_out_what_its_old_module_imported():
    import bpclip_core.inputs as inputs

    for name in ("torch", "annotations", "decoding_nonexistent", "_private"):
        assert not hasattr(inputs, name)
    from bpclip_core.inputs import decoding  # a submodule is still the submodule

    assert decoding.__name__ == "bpclip_core.inputs.decoding"


def test_asking_a_package_for_a_submodule_does_not_load_the_old_module():
    # ``from bpclip_core.model import backbone`` asks ``hasattr(package, "backbone")`` first
    code = (
        "import sys, bpclip_core.model, bpclip_core.inputs, bpclip_core.weights\n"
        "assert not hasattr(bpclip_core.model, 'backbone')\n"
        "assert not hasattr(bpclip_core.inputs, 'protocol')\n"
        "assert not hasattr(bpclip_core.weights, 'checkpoint')\n"
        "assert 'torch' not in sys.modules, 'an old module (and torch) was loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["no_such_module"])
def test_unknown_names_still_fail(name):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"bpclip_core.{name}")
