"""The paper's model: configuration, backbone levels, gated local pooling, the two attention
branches, the heads, the 40 adjectives and their CLIP text space, assembled in :mod:`.bpclip`.

Reading order follows the paper (Fig. 2): :mod:`.config` (shapes) -> :mod:`.backbone`
(F_1..F_5, weights from :mod:`.pretrained`) -> :mod:`.gated_pooling` (eq. 1-2) ->
:mod:`.attention` (eq. 3-5) -> :mod:`.heads` (eq. 6-9) with :mod:`.adjectives` and
:mod:`.text` -> :mod:`.bpclip` (the whole model). :mod:`.feature_scale` keeps a trained
model's features inside float16's range.

Importing this package does not import torch: the model classes load on first use.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bpclip_core.model.bpclip import BPCLIP, ModelCard, QualityOutput

__all__ = ["BPCLIP", "ModelCard", "QualityOutput"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bpclip_core.model import bpclip

        return getattr(bpclip, name)
    from bpclip_core._moved import old_member  # the old module bpclip_core.model's other members

    return old_member(__name__, name)
