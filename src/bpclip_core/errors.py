"""The exceptions bpclip raises; each subclasses the built-in a caller would expect."""

from __future__ import annotations

from string import Template


class BPCLIPError(Exception):
    """Base class of every error raised by bpclip.

    ``str(error)`` names the fix from Python (``checkpoint=...``, ``zero_shot=True``);
    ``command_message`` names it with the ``bpclip`` command's flags (``--checkpoint``,
    ``--zero-shot``) and is what the command prints.
    """

    def __init__(self, message: str = "", *, command_message: str | None = None) -> None:
        super().__init__(message)
        self.command_message = command_message if command_message is not None else message

    @classmethod
    def naming_the_fix(cls, template: str, **fixes: tuple[str, str]) -> BPCLIPError:
        """An error whose ``$name`` placeholders become ``fixes[name][0]`` (the Python argument)
        in the message and ``fixes[name][1]`` (the command flag) in ``command_message``."""
        text = Template(template)
        python = text.safe_substitute({k: v[0] for k, v in fixes.items()})
        command = text.safe_substitute({k: v[1] for k, v in fixes.items()})
        return cls(python, command_message=command)


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


# The command's own errors (bpclip_core.cli maps each to an exit code).
class UsageError(Exception):
    """A mistake in how the command was called."""


class OutputError(Exception):
    """The results could not be written during the run (e.g. a full disk)."""
