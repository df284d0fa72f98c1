"""BPCLIP checkpoints: the safetensors file format with its metadata, where checkpoints are
found (:mod:`.checkpoint`), and the bundled default models (``bundled/``).

The backbone's and CLIP's pretrained weights are part of the model: :mod:`bpclip_core.model.pretrained`.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """The members of the old module ``bpclip_core.weights`` (before the regrouping), with a warning."""
    from bpclip_core._moved import old_member

    return old_member(__name__, name)
