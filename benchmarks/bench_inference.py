"""Inference throughput of BPCLIP next to its baselines, all run in this process.

Rows (same size, batch and random inputs for every row):
- the bare torchvision ResNet50 (one pass; two passes for the FR baseline) in the layout the
  engine uses (channels_last on CPU and CUDA), the same in PyTorch's default layout, and the
  engine's own backbone alone (BatchNorm folded), which shows what the heads cost;
- BPCLIP-NR and BPCLIP-FR through the engine, with TorchScript (default), eager and
  torch.compile attention;
- pyiqa's TOPIQ (CFANet, ResNet50, random weights), NR and FR, when pyiqa is installed, as
  pyiqa runs it and in channels_last; the ratio uses the faster of the two;
- the whole path from JPEG files on disk (decode in DataLoader workers + model) against the
  same images as in-memory tensors;
- the shipped models (``bpclip-nr``, ``bpclip-fr``, their real weights) at their own test-time
  size against their own backbone alone (BatchNorm folded; one pass, two for FR: the heads'
  share of the time) and against TOPIQ at ``--size`` (``--shipped-only``: just these rows).
A separate process scores one 6000x4000 JPEG and reports its peak resident memory.

    .venv/bin/python benchmarks/bench_inference.py                    # CPU, 384x384, batch 8
    .venv/bin/python benchmarks/bench_inference.py --device cuda --precision bf16
    .venv/bin/python benchmarks/bench_inference.py --shipped-only     # the bundled models' rows

Random weights throughout: speed does not depend on them. Ratios are the numbers to quote;
absolute times on shared machines are noise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
import torchvision
from PIL import Image

from bpclip_core import BPCLIP, preset
from bpclip_core.model.backbone import build_backbone, fold_frozen_batchnorm
from bpclip_core.running.engine import QualityEngine, prefers_channels_last


class PeakMemory:
    """Peak resident memory of this process (or peak GPU memory) while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        self.gpu_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0


def rate(fn: Callable[[], object], items: int, repeats: int, sync: bool) -> float:
    """Items per second: two warm-up calls (TorchScript optimises on its second run), then the
    best of ``repeats`` timed calls."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return items / best


def topiq(mode: str, device: torch.device) -> torch.nn.Module | None:
    """pyiqa's TOPIQ (CFANet) with random weights, or None without pyiqa."""
    try:
        from pyiqa.archs.topiq_arch import CFANet
    except ImportError:
        return None
    net = CFANet(
        semantic_model_name="resnet50",
        model_name="cfanet_fr_kadid_res50" if mode == "fr" else "cfanet_nr_koniq_res50",
        backbone_pretrain=False,
        use_ref=mode == "fr",
        pretrained=False,
        pretrained_model_path=None,
    )
    return net.eval().to(device)


def huge_photo_peak_rss(size: int) -> float:
    """Peak RSS (GB) of a fresh process that scores one 6000x4000 JPEG with the paper NR model.

    Read from the child's own ``VmHWM`` (/proc/self/status): Linux carries ``ru_maxrss`` over
    ``execve``, so a child started from this (large) process would report the parent's peak.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "huge.jpg"
        noise = torch.rand(1, 3, 400, 600, generator=torch.Generator().manual_seed(0))
        big = torch.nn.functional.interpolate(noise, size=(4000, 6000), mode="bilinear")[0]
        Image.fromarray((big.permute(1, 2, 0) * 255).byte().numpy()).save(path, quality=90)
        code = (
            "import json, re, torch; from bpclip_core import BPCLIP, preset;"
            "from bpclip_core.running.engine import QualityEngine;"
            f"m = BPCLIP(preset('paper', image_size={size}), torch.randn(40, 1024));"
            f"r = QualityEngine(m, device='cpu', num_workers=0).score({str(path)!r})[0];"
            "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read());"
            "print(json.dumps({'error': r.error, 'rss': int(hwm.group(1)) * 1024}))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["error"]:
            raise RuntimeError(result["error"])
        return result["rss"] / 1e9


def shipped_rows(measure, device: torch.device, batch: int, size: int, channels_last: bool) -> None:
    """The bundled models at their test-time size against their own backbone and TOPIQ at ``size``."""
    from bpclip_core.weights.checkpoint import load_checkpoint, resolve_checkpoint

    speeds: dict[str, float] = {}
    for mode in ("nr", "fr"):
        model = load_checkpoint(resolve_checkpoint(mode=mode))
        side = model.config.image_size
        x, y = torch.rand(batch, 3, side, side), torch.rand(batch, 3, side, side)
        layout = (lambda t: t.contiguous(memory_format=torch.channels_last)) if channels_last else (lambda t: t)
        xl, yl = layout(x.to(device)), layout(y.to(device))
        own = fold_frozen_batchnorm(model.backbone).to(device)
        own = own.to(memory_format=torch.channels_last) if channels_last else own
        passes = (lambda o=own, a=xl, b=yl: (o(a), o(b))) if mode == "fr" else (lambda o=own, a=xl: o(a))
        name = f"bpclip-{mode} ({model.config.backbone}, {side}x{side})"
        speeds[f"{mode}-backbone"] = measure(f"{name}: its backbone alone{' x2' if mode == 'fr' else ''}", passes)
        engine = QualityEngine(model, device=device, batch_size=batch)
        ref = y if mode == "fr" else None
        speeds[mode] = measure(f"{name}: the whole model", lambda e=engine, a=x, r=ref: e.predict(a, r))
        net = topiq(mode, device)
        if net is not None:
            xt, yt = torch.rand(batch, 3, size, size, device=device), torch.rand(batch, 3, size, size, device=device)
            call = (lambda n=net, a=xt, b=yt: n(a, b)) if mode == "fr" else (lambda n=net, a=xt: n(a))
            speeds[f"topiq-{mode}"] = measure(f"pyiqa TOPIQ-{mode.upper()} ({size}x{size})", call)
    print("\n| shipped-model ratio | value | goal |\n|---|---:|---:|")
    for mode in ("nr", "fr"):
        heads = 1 - speeds[mode] / speeds[f"{mode}-backbone"]
        goal = "<= 0.20" if mode == "nr" else ""
        print(f"| bpclip-{mode}: heads' share of the time (1 - model / backbone alone) | {heads:.3f} | {goal} |")
        if f"topiq-{mode}" in speeds:
            goal = ">= 3" if mode == "nr" else ""
            value = speeds[mode] / speeds[f"topiq-{mode}"]
            print(f"| bpclip-{mode} / TOPIQ-{mode.upper()}, images (pairs)/s | {value:.2f} | {goal} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--files", type=int, default=24, help="JPEG files for the disk-path rows")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--shipped-only", action="store_true", help="only the bundled models' rows")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = device.type == "cuda"
    x, y = torch.rand(args.batch, 3, args.size, args.size), torch.rand(args.batch, 3, args.size, args.size)
    xd, yd = x.to(device), y.to(device)
    channels_last = prefers_channels_last(device)  # the engine's default layout
    xl, yl = (t.contiguous(memory_format=torch.channels_last) if channels_last else t for t in (xd, yd))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    rows: list[tuple[str, float, float]] = []

    def measure(name: str, fn: Callable[[], object], items: int = args.batch) -> float:
        gc.collect()
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with PeakMemory() as memory, torch.inference_mode(), autocast:
            speed = rate(fn, items, args.repeats, sync)
        peak = memory.gpu_peak if sync else memory.peak
        rows.append((name, speed, peak / 1e9))
        print(f"  {name:<44}{speed:8.2f}/s  peak {peak / 1e9:5.2f} GB", file=sys.stderr, flush=True)
        return speed

    header = (
        f"{platform.machine()}, {psutil.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {device}"
        f"{f' ({torch.cuda.get_device_name()})' if sync else ''}, {args.precision}, batch {args.batch}"
    )
    if args.shipped_only:
        shipped_rows(measure, device, args.batch, args.size, channels_last)
        print(f"\n{header}\n\n| model | images (pairs)/s | peak memory (GB) |\n|---|---:|---:|")
        for name, speed, peak in rows:
            print(f"| {name} | {speed:.2f} | {peak:.2f} |")
        return
    layout = "channels_last" if channels_last else "contiguous"
    resnet = torchvision.models.resnet50(weights=None).eval().to(device)
    if channels_last:
        plain = measure("ResNet50, PyTorch's default layout", lambda: resnet(xd))
        resnet = resnet.to(memory_format=torch.channels_last)
    base = measure(f"ResNet50 backbone, {layout} (NR baseline)", lambda: resnet(xl))
    base2 = measure(f"ResNet50 x2, {layout} (FR baseline)", lambda: (resnet(xl), resnet(yl)))
    if not channels_last:
        plain = base
    own = fold_frozen_batchnorm(build_backbone(preset("paper").backbone)).to(device)
    own = own.to(memory_format=torch.channels_last) if channels_last else own
    folded = measure(f"BPCLIP's backbone alone (BN folded, {layout})", lambda: own(xl))

    text = torch.randn(40, 1024)
    speeds: dict[str, float] = {}
    backends = ["script", "eager"] + ([] if args.skip_compile else ["compile"])
    file_engine = None
    for mode in ("nr", "fr"):
        for backend in backends:
            torch.manual_seed(0)
            model = BPCLIP(preset("paper", mode=mode, image_size=args.size), text)
            engine = QualityEngine(
                model, device=device, precision=args.precision, attention=backend, batch_size=args.batch
            )
            ref = y if mode == "fr" else None
            label = f"BPCLIP-{mode.upper()} ({backend}{', default' if backend == 'script' else ''})"
            speeds[f"{mode}-{backend}"] = measure(label, lambda e=engine, r=ref: e.predict(x, r))
            if mode == "nr" and backend == "script":
                file_engine = engine
    for mode in ("nr", "fr"):
        net = topiq(mode, device)
        if net is None:
            print("  pyiqa not installed: TOPIQ rows left out", file=sys.stderr)
            break
        label = f"pyiqa TOPIQ-{mode.upper()} (CFANet, random weights)"
        call = (lambda n=net: n(xd, yd)) if mode == "fr" else (lambda n=net: n(xd))
        speeds[f"topiq-{mode}"] = measure(label, call)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            call = (lambda n=net: n(xl, yl)) if mode == "fr" else (lambda n=net: n(xl))
            speeds[f"topiq-{mode}"] = max(speeds[f"topiq-{mode}"], measure(f"{label}, channels_last", call))

    with tempfile.TemporaryDirectory() as folder:
        images = (torch.rand(args.files, 3, args.size, args.size) * 255).byte()
        for i, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(Path(folder) / f"{i:04d}.jpg", quality=90)
        tensors = images.float() / 255
        in_memory = measure(
            f"BPCLIP-NR, {args.files} tensors in memory", lambda: file_engine.predict(tensors), args.files
        )
        from_disk = measure(
            f"BPCLIP-NR, {args.files} JPEG files on disk", lambda: file_engine.score(folder), args.files
        )

    huge = huge_photo_peak_rss(args.size) if device.type == "cpu" else float("nan")
    shipped_rows(measure, device, args.batch, args.size, channels_last)
    print(f"{header}, {args.size}x{args.size}\n")
    print("| model | images (pairs)/s | peak memory (GB) |\n|---|---:|---:|")
    for name, speed, peak in rows:
        print(f"| {name} | {speed:.2f} | {peak:.2f} |")
    print("\n| ratio | value | goal |\n|---|---:|---:|")
    print(f"| BPCLIP-NR / ResNet50 ({layout}) | {speeds['nr-script'] / base:.3f} | >= 0.85 |")
    print(f"| BPCLIP-FR / two ResNet50 passes ({layout}) | {speeds['fr-script'] / base2:.3f} | >= 0.85 |")
    print(f"| BPCLIP-NR / its own backbone alone (the heads' cost) | {speeds['nr-script'] / folded:.3f} | |")
    print(f"| BPCLIP-NR / ResNet50 in PyTorch's default layout | {speeds['nr-script'] / plain:.3f} | |")
    for mode in ("nr", "fr"):
        if f"topiq-{mode}" in speeds:
            value = speeds[f"{mode}-script"] / speeds[f"topiq-{mode}"]
            print(f"| BPCLIP-{mode.upper()} / TOPIQ-{mode.upper()} (its faster layout) | {value:.3f} | >= 1.5 |")
    for mode in ("nr", "fr"):
        for backend in backends[1:]:
            value = speeds[f"{mode}-{backend}"] / speeds[f"{mode}-script"]
            print(f"| {mode.upper()} {backend} / TorchScript | {value:.3f} | |")
    print(f"| JPEG files / in-memory tensors | {from_disk / in_memory:.3f} | >= 0.8 |")
    print(f"| 6000x4000 JPEG: peak RSS of a fresh process (GB) | {huge:.2f} | <= 3 |")


if __name__ == "__main__":
    main()
