"""The GPU figures of issue 12 in one run: one markdown table, each row against its baseline.

Rows: the bare torchvision ResNet50 (channels_last, one pass at 224 and 384, two passes for
FR; in --tiny runs ResNet18 and the ``tiny`` preset at 32 and 64 px); BPCLIP-NR and -FR
through the engine on tensors already on the device, on CPU tensors, and on 1024x768 JPEG
files written here (the ``cpu`` pipeline: float decoding in workers;
the ``device`` pipeline: uint8 and nvjpeg); what the card decodes (nvjpeg + resize alone);
the attention backends (eager, TorchScript, torch.compile); training steps in fp32 and bf16
(BPCLIP-NR fwd+bwd+AdamW against the bare backbone's); how far the device pipeline's scores
are from the CPU pipeline's (the bundled NR model on the same files); peak GPU memory.

    PYTHONPATH=src python benchmarks/bench_gpu.py            # on one card, about 4 minutes
    PYTHONPATH=src python benchmarks/bench_gpu.py --tiny     # tiny sizes: the CPU smoke run (automatic without CUDA)

Random weights (``clip_text: false``: no open_clip) except for the score agreement row.
Imports torch, torchvision, PIL and psutil only, besides bpclip_core. Each row is measured
on its own: a row that fails prints its error in the table, and rows past ``--budget-s``
are left out with a note, so the table always has every row.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bench_inference import PeakMemory, rate  # the helpers of the CPU benchmark: same timing rule
from PIL import Image

from bpclip_core import BPCLIP, preset
from bpclip_core.model.backbone import build_backbone
from bpclip_core.running.engine import QualityEngine, pick_device


@dataclass
class Sizes:
    """What one run measures: full sizes on a card, tiny ones for the CPU smoke run."""

    model: str  # the BPCLIP preset; its backbone is the bare baseline
    backbone: str
    small: int
    large: int
    batch: dict[int, int]
    files: int
    file_size: tuple[int, int]  # (width, height) of the JPEG files
    train_batch: int
    repeats: int
    workers: int


CARD = Sizes("paper", "resnet50", 224, 384, {224: 256, 384: 128}, 512, (1024, 768), 64, 3,
             min(15, max(1, (os.cpu_count() or 2) - 1)))  # fmt: skip
TINY = Sizes("tiny", "resnet18", 32, 64, {32: 2, 64: 2}, 4, (256, 192), 2, 1, 0)


# the file pipelines compared: the cpu one, the device one as the engine picks its JPEG decoder
# (nvjpeg on CUDA for the JPEGs PIL decodes at full scale), and the device one with every JPEG
# on the device (PIL's reduced decoding reproduced by a box)
PIPELINES = {
    "cpu pipeline": {"pipeline": "cpu"},
    "device pipeline": {"pipeline": "device", "jpeg_decoder": "auto"},
    "device pipeline, all JPEGs on the device": {"pipeline": "device", "jpeg_decoder": "torchvision"},
}


@dataclass
class Row:
    name: str
    rate: float | None = None  # images (pairs) per second
    baseline: str = ""
    ratio: float | None = None
    goal: str = ""
    peak_mb: float | None = None
    note: str = ""


class Bench:
    """Measures rows one by one; a failing row keeps its error, rows past the budget are skipped."""

    def __init__(self, device: torch.device, sizes: Sizes, precision: str, budget_s: float) -> None:
        self.device, self.sizes, self.precision = device, sizes, precision
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.deadline = time.monotonic() + budget_s
        self.rows: list[Row] = []

    def row(self, name: str, fn: Callable[[], object], items: int = 0, baseline: str = "", goal: str = "",
            grad: bool = False) -> float | None:  # fmt: skip
        """Time ``fn`` (``items`` per call, under inference mode unless ``grad``), or with ``items``
        0 record the ``(rate or None, note)`` it returns; the rate, or None on failure."""
        row = Row(name, baseline=baseline, goal=goal)
        self.rows.append(row)
        if time.monotonic() > self.deadline:
            row.note = "skipped: the time budget (--budget-s) is spent"
            return None
        gc.collect()
        began = time.monotonic()
        sync = self.device.type == "cuda"
        mode = torch.inference_mode() if items and not grad else contextlib.nullcontext()
        try:
            with PeakMemory() as memory, mode:
                value = fn() if items == 0 else self.rate(fn, items)
            row.rate, row.note = value if isinstance(value, tuple) else (value, "")
            row.peak_mb = (memory.gpu_peak if sync else memory.peak) / 2**20
        except Exception as exc:  # one failing row must not stop the others
            row.note = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            traceback.print_exc(file=sys.stderr)
        if row.rate is not None and baseline:
            base = next((r.rate for r in self.rows if r.name == baseline), None)
            row.ratio = row.rate / base if base else None
        print(f"  {name}: {row.rate} {row.note} ({time.monotonic() - began:.1f} s)", file=sys.stderr, flush=True)
        return row.rate

    def rate(self, fn: Callable[[], object], items: int) -> float:
        """Items per second: bench_inference's rule on a card (two warm-up calls, then the best
        of ``repeats``); one call in --tiny runs, which only check that every row runs."""
        sync = self.device.type == "cuda"
        if self.sizes is not TINY:
            return rate(fn, items, self.sizes.repeats, sync)
        began = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        return items / (time.perf_counter() - began)

    def engine(self, mode: str, size: int, **options) -> QualityEngine:
        torch.manual_seed(0)
        config = preset(self.sizes.model, mode=mode, image_size=size, clip_text=False)
        model = BPCLIP(config, torch.nn.functional.normalize(torch.randn(40, config.clip_dim), dim=-1))
        options = {"precision": self.precision, "batch_size": self.sizes.batch[size], **options}
        return QualityEngine(model, device=self.device, **options)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def bare_backbone(bench: Bench) -> None:
    """The baselines: torchvision's ResNet (50 on a card) in channels_last, one and two passes."""
    import torchvision

    net = getattr(torchvision.models, bench.sizes.backbone)(weights=None).eval()
    net = net.to(bench.device, memory_format=torch.channels_last)
    for size in (bench.sizes.small, bench.sizes.large):
        batch = bench.sizes.batch[size]
        x = torch.rand(batch, 3, size, size, device=bench.device).contiguous(memory_format=torch.channels_last)
        y = torch.rand_like(x)

        def one(x=x) -> object:
            with bench.autocast():
                return net(x)

        def two(x=x, y=y) -> object:
            with bench.autocast():
                return net(x), net(y)

        bench.row(bare_name(bench, size), one, batch)
        if size == bench.sizes.large:
            bench.row(bare_name(bench, size, "fr"), two, batch)


def bare_name(bench: Bench, size: int, mode: str = "nr") -> str:
    """The baseline row of a mode and size: one pass of the bare backbone, two for FR."""
    passes = " x2 (FR baseline)" if mode == "fr" else ""
    return f"bare {bench.sizes.backbone}{passes} @{size}"


def engine_tensors(bench: Bench) -> None:
    """BPCLIP through the engine on tensors already on the device, and on CPU tensors."""
    large = bench.sizes.large
    for mode, size in (("nr", bench.sizes.small), ("nr", large), ("fr", large)):
        batch = bench.sizes.batch[size]
        baseline = bare_name(bench, size, mode)
        engine = bench.engine(mode, size)
        x, y = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
        for where, (a, b) in (("device", (x.to(bench.device), y.to(bench.device))), ("CPU", (x, y))):
            refs = b if mode == "fr" else None
            name = f"{mode.upper()} engine, {where} tensors @{size}"
            bench.row(name, lambda e=engine, a=a, r=refs: e.predict(a, r), batch, baseline, ">= 0.85")
        del engine


def attention_backends(bench: Bench, compile_: bool) -> None:
    """The MSCA/SA blocks eager, TorchScript (default) and torch.compile, NR on device tensors."""
    size = bench.sizes.large
    batch = bench.sizes.batch[size]
    x = torch.rand(batch, 3, size, size, device=bench.device)
    script = f"NR attention script @{size}"
    for backend in ("script", "eager", "compile"):
        name = f"NR attention {backend} @{size}"
        if backend == "compile" and not compile_:
            bench.rows.append(Row(name, baseline=script, note="skipped: --tiny leaves torch.compile out (--compile)"))
            continue
        engine = bench.engine("nr", size, attention=backend)
        bench.row(name, lambda e=engine: e.predict(x), batch, "" if backend == "script" else script)


def write_jpegs(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Photo-like JPEGs (smooth structure at three scales, edges, grain), quality 90."""
    rng = np.random.default_rng(0)
    width, height = size
    paths = []
    for i in range(count):
        layers = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
                  for w, h in ((8, 6), (32, 24), (128, 96))]  # fmt: skip
        picture = sum(np.asarray(layer, dtype=np.float32) * w for layer, w in zip(layers, (0.6, 0.3, 0.1)))
        picture += rng.normal(0, 4, (height, width, 3))
        paths.append(folder / f"{i:05d}.jpg")
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def engine_files(bench: Bench, folder: Path) -> None:
    """Scoring JPEG files: the cpu pipeline against the device pipeline (nvjpeg on CUDA), NR and FR."""
    size, count = bench.sizes.large, bench.sizes.files

    def decode_alone() -> tuple[float, str]:
        from bpclip_core.inputs.decoding import load_pixels_or_jpeg, resize_short_side
        from bpclip_core.inputs.device_pipeline import decode_jpegs, reduce_like_draft

        encoded = [load_pixels_or_jpeg(p, size) for p in sorted(folder.iterdir())]

        def decode() -> None:
            for start in range(0, count, bench.sizes.batch[size]):
                chunk = encoded[start : start + bench.sizes.batch[size]]
                for image, jpeg in zip(decode_jpegs(chunk, bench.device), chunk):
                    resize_short_side(reduce_like_draft(image.float() / 255, jpeg.reduce), size)

        return bench.rate(decode, count), "torchvision.io.decode_jpeg"

    bench.row(f"JPEG decode on the device + resize @{size}", decode_alone)
    for mode in ("nr", "fr"):
        baseline = bare_name(bench, size, mode)
        goal = ">= 1,200 pairs/s" if mode == "fr" else ">= 2,500/s"
        refs = folder if mode == "fr" else None  # each file against itself: the pairing and both decodes
        for label, options in PIPELINES.items():
            engine = bench.engine(mode, size, num_workers=bench.sizes.workers, **options)
            name = f"{mode.upper()} engine, JPEG files, {label} @{size}"
            note = "" if engine.pipeline == "cpu" else f"JPEGs decoded on the device: {engine._device_jpeg()}"

            def score(e=engine, r=refs, note=note) -> tuple[float, str]:
                results = []
                speed = bench.rate(lambda: results.append(e.score(folder, r)), count)
                failed = sum(res.error is not None for res in results[-1])
                return speed, "; ".join(part for part in (note, f"{failed} failed" if failed else "") if part)

            bench.row(name, score, baseline=baseline, goal=goal)
            del engine


def score_agreement(bench: Bench, folder: Path) -> None:
    """The largest score difference of each device pipeline from the cpu pipeline: the bundled
    (trained) NR model on the files, in fp32, at its own size and at the large size."""
    from bpclip_core.inputs.protocol import TestTimeProtocol
    from bpclip_core.weights.checkpoint import bundled_checkpoint, load_checkpoint

    model = load_checkpoint(bundled_checkpoint("nr"))
    sizes = (model.config.image_size, bench.sizes.large)

    def scores(options: dict, short: int) -> list[float]:
        engine = QualityEngine(model, device=bench.device, precision="fp32", num_workers=bench.sizes.workers, **options)
        engine.protocol = TestTimeProtocol("resize", size=short)
        return [r.score for r in engine.score(folder)]

    expected = {}
    for label, options in list(PIPELINES.items())[1:]:

        def agreement(options=options) -> tuple[None, str]:
            for short in sizes:
                expected.setdefault(short, scores(PIPELINES["cpu pipeline"], short))
            worst = [max(abs(a - b) for a, b in zip(expected[s], scores(options, s))) for s in sizes]
            shown = ", ".join(f"{w:.4f} at resize {s}" for w, s in zip(worst, sizes))
            return None, f"largest score difference {shown} (bundled NR model, {bench.sizes.files} files)"

        bench.row(f"score agreement: {label} vs cpu pipeline", agreement, goal="<= 0.01")


def training_steps(bench: Bench) -> None:
    """One optimiser step of BPCLIP-NR against the bare backbone's, in fp32 and bf16 autocast,
    both laid out and cast as ``bpclip train`` does (the trainer's StepNumerics)."""
    from bpclip_core.training.trainer import StepNumerics, TensorOutputs, calibrate_batchnorm, train_step

    size, batch = bench.sizes.large, bench.sizes.train_batch
    for precision in ("fp32", "bf16"):
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if precision == "bf16" and bench.device.type == "cuda" and not native_bf16:
            continue
        numerics = StepNumerics.for_device(bench.device, precision, None)  # channels_last on CUDA
        layout = torch.channels_last if numerics.channels_last else torch.contiguous_format
        images = numerics.inputs(torch.rand(batch, 3, size, size), bench.device)
        data = {"distorted": images, "target": torch.rand(batch)}
        torch.manual_seed(0)
        backbone = build_backbone(bench.sizes.backbone).train().to(bench.device, memory_format=layout)
        calibrate_batchnorm(backbone, [images])
        bare_optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-4)

        def bare_step(backbone=backbone, optimizer=bare_optimizer, numerics=numerics, images=images) -> None:
            with numerics.autocast(bench.device):
                loss = sum(level.float().mean() for level in backbone(images))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        config = preset(bench.sizes.model, image_size=size, clip_text=False)
        model = BPCLIP(config, torch.nn.functional.normalize(torch.randn(40, config.clip_dim), dim=-1))
        model = model.train().to(bench.device, memory_format=layout)
        calibrate_batchnorm(model.backbone, [images])
        wrapped = TensorOutputs(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def bpclip_step(wrapped=wrapped, optimizer=optimizer, numerics=numerics, data=data) -> None:
            train_step(wrapped, optimizer, data, bench.device, numerics=numerics)

        bare = f"train step {precision}, bare backbone @{size}"
        bench.row(bare, bare_step, batch, grad=True)
        bench.row(f"train step {precision}, BPCLIP-NR @{size}", bpclip_step, batch, bare, ">= 0.8", grad=True)
        del backbone, model, wrapped, optimizer, bare_optimizer


def table(bench: Bench, started: float) -> str:
    """The one table, in markdown."""
    peak = max((r.peak_mb for r in bench.rows if r.peak_mb is not None), default=0.0)
    kind = "GPU" if bench.device.type == "cuda" else "RSS"
    lines = [
        f"| measurement | images (pairs)/s | against | ratio | goal | peak {kind} MB | note |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    for r in bench.rows:
        value = "-" if r.rate is None else f"{r.rate:,.1f}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.3f}"
        memory = "-" if r.peak_mb is None else f"{r.peak_mb:,.0f}"
        note = r.note.replace("|", "/")  # an error message must not split the cell
        lines.append(f"| {r.name} | {value} | {r.baseline} | {ratio} | {r.goal} | {memory} | {note} |")
    elapsed = time.monotonic() - started
    lines.append(f"| peak memory over the run ({kind}) | - | | | | {peak:,.0f} | {elapsed:.0f} s in all |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU smoke run; the default without CUDA)")
    parser.add_argument("--device", default="auto", help="auto (cuda, else cpu), cuda, cuda:N or cpu")
    parser.add_argument("--precision", default=None, help="bf16 (default on CUDA), fp16 or fp32 (default on CPU)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="rows that would start later are left out")
    parser.add_argument("--compile", action="store_true", help="measure torch.compile in --tiny runs too")
    args = parser.parse_args(argv)
    started = time.monotonic()
    device = pick_device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                         "cpu" if args.device == "auto" else args.device)  # fmt: skip
    tiny = args.tiny or device.type != "cuda"
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    bench = Bench(device, TINY if tiny else CARD, precision, args.budget_s)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"bench_gpu: {card}, torch {torch.__version__}, {precision}, {'tiny sizes' if tiny else 'full sizes'}",
          file=sys.stderr)  # fmt: skip

    bare_backbone(bench)
    engine_tensors(bench)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_jpegs(folder, bench.sizes.files, bench.sizes.file_size)
        engine_files(bench, folder)
        score_agreement(bench, folder)
    attention_backends(bench, compile_=not tiny or args.compile)
    training_steps(bench)

    print(f"{card}; torch {torch.__version__}; {precision}; {'tiny sizes (smoke run)' if tiny else 'full sizes'}\n")
    print(table(bench, started))


if __name__ == "__main__":
    main()
