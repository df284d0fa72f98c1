"""Start-up cost of the ``bpclip`` command: help and usage errors, and ``bpclip score one.jpg``.

Every row runs in a fresh process (as a user's shell would), ``--repeat`` times; the median
is printed. Rows:
- ``bpclip --help``, each subcommand's ``--help`` and an argument error (target: < 0.5 s,
  no torch imported);
- ``bpclip score one.jpg`` end to end (the bundled NR model, one 1024x768 JPEG, CPU);
- the same split into its phases inside one process: imports (the command module, then
  the engine with torch), model set-up (checkpoint read, model built, attention compiled)
  and scoring the image (decode + forward, the first call);
- which heavy optional modules the scoring process imported (pyiqa, fiftyone, open_clip
  must not be among them when scoring files with a checkpoint).

    .venv/bin/python benchmarks/bench_startup.py              # 3 repeats
    .venv/bin/python benchmarks/bench_startup.py --repeat 5 --json results.json

Times on a shared machine are noisy: compare rows measured in one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "open_clip", "torchvision", "pyiqa", "fiftyone", "matplotlib", "bpclip_core.running.engine")

PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
from bpclip_core import cli
t1 = time.perf_counter()
from bpclip_core.running.engine import QualityEngine
t2 = time.perf_counter()
engine = QualityEngine.from_checkpoint(None, device="cpu")
t3 = time.perf_counter()
result = engine.score(sys.argv[1])[0]
t4 = time.perf_counter()
assert result.error is None, result.error
heavy = [m for m in ("pyiqa", "fiftyone", "open_clip", "matplotlib") if m in sys.modules]
print(json.dumps({"import command": t1 - t0, "import engine (torch)": t2 - t1, "model set-up": t3 - t2,
                  "score one image": t4 - t3, "heavy modules imported": heavy}))
"""

IMPORTED_AFTER_HELP = r"""
import contextlib, io, json, sys
from bpclip_core.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "imported": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _bpclip() -> list[str]:
    return [sys.executable, "-c", "import sys; from bpclip_core.cli import main; sys.exit(main())"]


def _time(command: list[str], repeat: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        code = subprocess.run(command, capture_output=True, text=True).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per row (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "one.jpg"
        rng = np.random.default_rng(0)
        coarse = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        coarse.resize((1024, 768), Image.BICUBIC).save(image, quality=90)

        print(f"{'command':<44} {'median s':>9}  exit  heavy modules imported")
        for argv in (
            ["--help"],
            ["score", "--help"],
            ["init-checkpoint", "--help"],
            ["info", "--help"],
            ["train", "--help"],
            ["evaluate", "--help"],
            ["splits", "--help"],
            ["synthesize", "--help"],
            ["fiftyone", "install", "--help"],
            ["score"],  # an argument error
            ["score", str(image), "--format", "xml"],  # an argument error
        ):
            seconds, code = _time([*_bpclip(), *argv], args.repeat)
            probe = subprocess.run([sys.executable, "-c", IMPORTED_AFTER_HELP, *argv], capture_output=True, text=True)
            imported = json.loads(probe.stdout)["imported"] if probe.returncode == 0 else ["(probe failed)"]
            label = "bpclip " + " ".join(a if a != str(image) else "one.jpg" for a in argv)
            print(f"{label:<44} {seconds:9.3f}  {code:>4}  {', '.join(imported) or '-'}")
            results[label] = {"seconds": seconds, "exit": code, "imported": imported}

        seconds, code = _time([*_bpclip(), "score", str(image), "--no-progress", "--device", "cpu"], args.repeat)
        print(f"{'bpclip score one.jpg (end to end)':<44} {seconds:9.3f}  {code:>4}")
        results["bpclip score one.jpg"] = {"seconds": seconds, "exit": code}

        phases = []
        for _ in range(args.repeat):
            run = subprocess.run([sys.executable, "-c", PHASES, str(image)], capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(run.stderr[-2000:])
            phases.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print("bpclip score one.jpg, phases in one process (median):")
        for key in ("import command", "import engine (torch)", "model set-up", "score one image"):
            value = statistics.median(p[key] for p in phases)
            print(f"  {key:<42} {value:9.3f}")
            results[f"phase: {key}"] = value
        heavy = phases[-1]["heavy modules imported"]
        print(f"  heavy optional modules imported: {', '.join(heavy) or 'none'}")
        results["phase: heavy modules imported"] = heavy
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
