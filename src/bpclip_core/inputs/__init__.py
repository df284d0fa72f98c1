"""Inputs: from files, PIL images, arrays and tensors to the model's views.

:mod:`.decoding` reads image files (checked from their headers before any pixel is
allocated); :mod:`.checks` checks tensors; :mod:`.protocol` is the test-time protocol (how an
image of any size becomes the model's input); :mod:`.loading` expands and pairs the engine's
inputs and prepares them on the CPU; :mod:`.device_pipeline` sends uint8 to the device and
does the rest there.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """The members of the old module ``bpclip_core.inputs`` (before the regrouping), with a warning."""
    from bpclip_core._moved import old_member

    return old_member(__name__, name)
