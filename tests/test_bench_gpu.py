"""benchmarks/bench_gpu.py: its CPU smoke run (--tiny) prints the one table with every row."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
ROWS = [
    "bare resnet18 @32",
    "bare resnet18 @64",
    "bare resnet18 x2 (FR baseline) @64",
    "NR engine, device tensors @32",
    "NR engine, CPU tensors @32",
    "NR engine, device tensors @64",
    "NR engine, CPU tensors @64",
    "FR engine, device tensors @64",
    "FR engine, CPU tensors @64",
    "JPEG decode on the device + resize @64",
    "NR engine, JPEG files, cpu pipeline @64",
    "NR engine, JPEG files, device pipeline @64",
    "NR engine, JPEG files, device pipeline, all JPEGs on the device @64",
    "FR engine, JPEG files, cpu pipeline @64",
    "FR engine, JPEG files, device pipeline @64",
    "FR engine, JPEG files, device pipeline, all JPEGs on the device @64",
    "score agreement: device pipeline vs cpu pipeline",
    "score agreement: device pipeline, all JPEGs on the device vs cpu pipeline",
    "NR attention script @64",
    "NR attention eager @64",
    "NR attention compile @64",
    "train step fp32, bare backbone @64",
    "train step fp32, BPCLIP-NR @64",
    "train step bf16, bare backbone @64",
    "train step bf16, BPCLIP-NR @64",
    "peak memory over the run (RSS)",
]
WITHOUT_RATE = {"NR attention compile @64", "peak memory over the run (RSS)"}  # and the score agreements


def _table(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert sum(line.startswith("|---") for line in lines) == 1, stdout  # one table
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke run is the CPU run; on a card run the script itself")
def test_the_tiny_run_prints_every_row_without_optional_packages(tmp_path):
    blocked = "import sys; sys.modules.update(dict.fromkeys(['open_clip', 'pyiqa', 'fiftyone']))"  # None: ImportError
    run = (
        f"{blocked}; sys.path.insert(0, {str(BENCHMARKS)!r}); sys.argv = ['bench_gpu.py', '--tiny'];"
        f"import runpy; runpy.run_path({str(BENCHMARKS / 'bench_gpu.py')!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _table(done.stdout)
    assert [row[0] for row in rows] == ROWS
    for name, rate, *_, note in rows:
        assert "error" not in note, (name, note)
        if name not in WITHOUT_RATE and not name.startswith("score agreement"):
            assert float(rate.replace(",", "")) > 0, name
    notes = {row[0]: row[-1] for row in rows}
    exact = notes["score agreement: device pipeline vs cpu pipeline"]  # on the CPU: PIL decodes for both
    assert [float(v) for v in re.findall(r"(\d\.\d+) at resize", exact)] == [0.0, 0.0]
    boxed = notes["score agreement: device pipeline, all JPEGs on the device vs cpu pipeline"]
    differences = [float(v) for v in re.findall(r"(\d\.\d+) at resize", boxed)]
    assert len(differences) == 2 and differences[0] == 0.0  # at 160 no reduced decoding: the same libjpeg-turbo
    assert "skipped" in notes["NR attention compile @64"]


def test_a_failing_row_keeps_its_error_and_the_budget_skips_rows(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_gpu

    bench = bench_gpu.Bench(torch.device("cpu"), bench_gpu.TINY, "fp32", budget_s=3600)
    assert bench.row("fine", lambda: None, 4) > 0
    assert bench.row("broken", lambda: 1 / 0, 4, baseline="fine") is None
    bench.deadline = 0.0
    assert bench.row("late", lambda: None, 4) is None
    rows = {row[0]: row for row in _table(bench_gpu.table(bench, started=0.0))}
    assert set(rows) == {"fine", "broken", "late", "peak memory over the run (RSS)"}
    assert rows["broken"][-1].startswith("error: ZeroDivisionError") and rows["broken"][1] == "-"
    assert "time budget" in rows["late"][-1]
