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
# "model", "inputs" and "weights" are package names now: only their old members are aliased
# when the package itself has no such attribute (e.g. ``bpclip_core.model.BPCLIP`` still works).
_PACKAGES_NOW = {"model", "inputs", "weights"}


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
