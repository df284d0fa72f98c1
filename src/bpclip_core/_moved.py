"""The module paths of bpclip 0.1.0 before ``bpclip_core`` was regrouped into subpackages.

``import bpclip_core.engine`` (and every other old path) still works: it gives the module at
its new place, with a ``DeprecationWarning`` naming that place. Python has no aliasing of
module names of its own, so a small meta path finder does it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

MOVED_MODULES = {
    "adjectives": "model.adjectives",
    "config": "model.config",
    "text": "model.text",
    "weights": "model.pretrained",
    "backbone": "model.backbone",
    "gated_pooling": "model.gated_pooling",
    "attention": "model.attention",
    "heads": "model.heads",
    "model": "model.bpclip",
    "feature_scale": "model.feature_scale",
    "images": "inputs.decoding",
    "inputs": "inputs.checks",
    "protocol": "inputs.protocol",
    "loading": "inputs.loading",
    "device_pipeline": "inputs.device_pipeline",
    "checkpoint": "weights.checkpoint",
    "engine": "running.engine",
    "sharding": "running.sharding",
    "explain": "running.explain",
    "zero_shot": "running.zero_shot",
}
# "model", "inputs" and "weights" are package names now: their old members are found by the
# package's ``__getattr__`` through :func:`old_member` (``bpclip_core.inputs.check_images``).
_PACKAGES_NOW = {"model", "inputs", "weights"}
_MISSING = object()


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``bpclip_core.<old name>`` and loads the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        package, _, name = fullname.rpartition(".")
        if package != "bpclip_core" or name not in MOVED_MODULES or name in _PACKAGES_NOW:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"bpclip_core.{MOVED_MODULES[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} is now {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new path is already loaded."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


def old_member(package: str, name: str) -> Any:
    """``name`` of the old module that ``package`` (``bpclip_core.inputs``, ``.weights`` or
    ``.model``) replaced, with a ``DeprecationWarning`` naming its new place.

    Raises:
        AttributeError: the old module had no such public member of its own (a module or a
            name it imported is not one, so ``from bpclip_core.inputs import decoding`` still
            finds the subpackage's module).
    """
    if name.startswith("_") or importlib.util.find_spec(f"{package}.{name}") is not None:
        # a submodule: ``from package import submodule`` asks here first, and must not import
        # the old module (and torch with it) to be told no
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    old_module = importlib.import_module(f"bpclip_core.{MOVED_MODULES[package.rpartition('.')[2]]}")
    value = getattr(old_module, name, _MISSING)
    defined_elsewhere = getattr(value, "__module__", old_module.__name__) != old_module.__name__
    if value is _MISSING or isinstance(value, ModuleType) or defined_elsewhere:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    new = f"{old_module.__name__}.{name}"
    warnings.warn(f"{package}.{name} is now {new}; import it from there", DeprecationWarning, stacklevel=3)
    return value
