"""Train BPCLIP with pyiqa's trainer: ``python train_with_pyiqa.py -opt CONFIG.yml``.

Registers BPCLIP with pyiqa, expands ``${VARS}`` in the config from the environment, and
runs ``pyiqa.train.train_pipeline`` with the current folder as its root (it writes
``experiments/<name>/`` there). Other pyiqa flags (``--auto_resume``, ``--debug``) pass through.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from bpclip_plugins.pyiqa_registration import register


def main() -> None:
    args = sys.argv[1:]
    if "-opt" not in args:
        sys.exit("usage: train_with_pyiqa.py -opt CONFIG.yml [pyiqa flags]")
    index = args.index("-opt") + 1
    text = os.path.expandvars(Path(args[index]).read_text())
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    unresolved = re.findall(r"\$\{\w+\}", code)
    if unresolved:
        sys.exit(f"set these environment variables first: {sorted(set(unresolved))}")
    import pyiqa.train

    register()
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as resolved:
        resolved.write(text)
    args[index] = resolved.name
    sys.argv = [sys.argv[0], *args]
    try:
        pyiqa.train.train_pipeline(os.getcwd())
    finally:
        os.unlink(resolved.name)


if __name__ == "__main__":
    main()
