"""The exceptions bpclip raises; each subclasses the built-in a caller would expect."""

from __future__ import annotations


class BPCLIPError(Exception):
    """Base class of every error raised by bpclip."""


class InputError(BPCLIPError, ValueError):
    """An image or tensor given to the model has the wrong shape, range or values."""


class DeviceError(BPCLIPError, ValueError):
    """The device asked for does not exist or is not available on this machine."""


class CheckpointError(BPCLIPError, ValueError):
    """A checkpoint file is corrupt, truncated, or not a BPCLIP checkpoint."""


class ModeMismatchError(CheckpointError):
    """A full-reference checkpoint was used for no-reference scoring, or the reverse."""


class CheckpointNotFoundError(BPCLIPError, FileNotFoundError):
    """No checkpoint was found at any place the loader looks."""


class WeightsNotFoundError(BPCLIPError, FileNotFoundError):
    """Pretrained backbone or CLIP weights are not in the local cache and may not be downloaded."""
