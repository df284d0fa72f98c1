"""Build hook: ship ``bpclip-pyiqa.pth`` at the top of site-packages (all metadata is in pyproject.toml).

The one-line ``.pth`` file imports :mod:`bpclip_plugins` (standard library only) at interpreter
start-up, which registers BPCLIP with pyiqa the moment pyiqa is imported: pyiqa checks its
config table before it loads any ``pyiqa.archs`` entry point, so only a start-up hook makes
``pyiqa.create_metric('bpclip')`` and ``pyiqa bpclip -t img.png`` work in a fresh process.
``BPCLIP_PYIQA_AUTOREGISTER=0`` turns it off.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "bpclip-pyiqa.pth"
PTH_SOURCE = os.path.join("src", PTH)


class BuildPyWithPth(build_py):
    """build_py that also puts the start-up ``.pth`` at the root of the wheel (editable ones too)."""

    def _pth_target(self) -> str:
        if getattr(self, "editable_mode", False):  # editable wheels are assembled from install_lib
            return os.path.join(self.get_finalized_command("install").install_lib, PTH)
        return os.path.join(self.build_lib, PTH)

    def run(self) -> None:
        super().run()
        target = self._pth_target()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        self.copy_file(PTH_SOURCE, target, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH))
        return outputs


setup(cmdclass={"build_py": BuildPyWithPth})
