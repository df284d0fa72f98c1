"""BPCLIP checkpoints: the safetensors file format with its metadata, where checkpoints are
found (:mod:`.checkpoint`), and the bundled default models (``bundled/``).

The backbone's and CLIP's pretrained weights are part of the model: :mod:`bpclip_core.model.pretrained`.
"""
