"""Tell pyiqa about BPCLIP without importing torch or BPCLIP: metric names, architecture, input preparation.

pyiqa's ``create_metric(name)`` and ``list_models()`` read ``pyiqa.default_model_configs.DEFAULT_CONFIGS``
before anything else, while its ``pyiqa.archs`` entry point runs only once the architecture
registry is first queried, after that check. So :func:`register` is run as soon as pyiqa
itself is imported, by a small import hook that ``bpclip-pyiqa.pth`` (installed beside the
package) sets up at interpreter start-up: a fresh process that never imports
``bpclip_plugins`` still finds ``bpclip`` (also named ``bpclip_nr``), ``bpclip_fr`` and
``bpclip_zeroshot``, also in pyiqa's own command (``pyiqa bpclip -t img.png``). Set ``BPCLIP_PYIQA_AUTOREGISTER=0`` to
turn the hook off; importing :mod:`bpclip_plugins` or the entry point still registers.

This module imports only the standard library: the hook costs nothing in processes that
never import pyiqa. The architecture itself (:class:`bpclip_plugins.pyiqa.BPCLIPArch`) is
registered lazily, so importing pyiqa does not import torch-heavy BPCLIP code either.
"""

from __future__ import annotations

import sys

# Only modules that Python's start-up has already imported: this runs in every process
# through the .pth hook (importlib.abc alone would pull in pathlib, tempfile and bz2: ~20 ms).

AUTOREGISTER_ENV = "BPCLIP_PYIQA_AUTOREGISTER"
ARCH_NAME = "BPCLIPArch"
ARCH_PATH = "bpclip_plugins.pyiqa:BPCLIPArch"

# One table: each metric with its mode, direction and score range (pyiqa's DEFAULT_CONFIGS format).
_NR_METRIC: dict[str, object] = {
    "metric_opts": {"type": ARCH_NAME, "mode": "nr"},
    "metric_mode": "NR",
    "lower_better": False,
    "score_range": "0, 1",
}
PYIQA_METRICS: dict[str, dict[str, object]] = {
    "bpclip": _NR_METRIC,
    "bpclip_nr": _NR_METRIC,  # the name pyiqa users expect beside bpclip_fr (register() copies each entry)
    "bpclip_fr": {
        "metric_opts": {"type": ARCH_NAME, "mode": "fr"},
        "metric_mode": "FR",
        "lower_better": False,
        "score_range": "0, 1",
    },
    "bpclip_zeroshot": {
        "metric_opts": {"type": ARCH_NAME, "zero_shot": True},
        "metric_mode": "NR",
        "lower_better": False,
        "score_range": "0, 1",
    },
}

_registered = False


def register() -> None:
    """Register BPCLIP's metrics, architecture and input preparation with pyiqa (idempotent).

    Also the ``pyiqa.archs`` entry point. Imports pyiqa's config table and registry only.
    """
    global _registered
    if _registered:
        return
    _registered = True
    import copy

    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    for name, entry in PYIQA_METRICS.items():
        DEFAULT_CONFIGS.setdefault(name, copy.deepcopy(entry))
    if hasattr(ARCH_REGISTRY, "register_lazy"):
        if ARCH_NAME not in getattr(ARCH_REGISTRY, "_obj_map", {}):
            ARCH_REGISTRY.register_lazy(ARCH_NAME, ARCH_PATH, override=True)
    else:  # older pyiqa: register the class itself
        from .pyiqa import BPCLIPArch

        ARCH_REGISTRY.register(BPCLIPArch, override=True)
    _prepare_inputs_with_the_network()


def _prepare_inputs_with_the_network() -> None:
    """Let a pyiqa network turn its inputs into a batch itself (``prepare_input``), as BPCLIPArch does.

    pyiqa's ``InferenceModel`` reads paths with its own loader, which differs from ours (16-bit
    PNGs, EXIF orientation), takes no lists and checks tensors with bare assertions (a float16
    image of white 1.0 fails them). A network's ``prepare_input`` returns the batch, or None
    for a source it leaves to pyiqa; networks without one keep pyiqa's conversion.
    """
    try:
        from pyiqa.models.inference_model import InferenceModel
    except ImportError:
        return
    original = InferenceModel._to_batched_tensor
    if getattr(original, "_bpclip_wrapped", False):
        return

    def _to_batched_tensor(self: object, img: object) -> object:
        prepare = getattr(getattr(self, "net", None), "prepare_input", None)
        batch = None if prepare is None else prepare(img)
        return original(self, img) if batch is None else batch

    _to_batched_tensor._bpclip_wrapped = True  # type: ignore[attr-defined]
    InferenceModel._to_batched_tensor = _to_batched_tensor


class _RegisterOnImport:
    """A meta path finder that runs :func:`register` right after pyiqa itself is first imported."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != "pyiqa":
            return None
        import importlib.util

        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: object) -> None:
            execute(module)
            register()

        spec.loader.exec_module = exec_module
        return spec


def register_when_available() -> None:
    """Register now if pyiqa is imported, else right after it is (never, if it never is)."""
    if "pyiqa" in sys.modules:
        if sys.modules["pyiqa"] is not None:  # None: imports of pyiqa are blocked
            register()
        return
    if not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())
