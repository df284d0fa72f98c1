"""The option values the front ends offer (precision, attention, protocol), importable without torch.

The command builds its parser from these, so ``bpclip --help`` and argument errors answer
before torch is imported; :mod:`bpclip_core.running.engine` and :mod:`bpclip_core.inputs.protocol` use them too.
"""

from __future__ import annotations

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ATTENTION_BACKENDS = ("script", "eager", "compile")
# TorchScript is the default, chosen by measurement (benchmarks/bench_attention.py, CPU fp32,
# 384x384, batch 8): run interleaved in one process, scripted and eager attention are equal
# within noise (eager 1.003x NR, 1.012x FR), so the scripted form costs nothing and needs no
# compiler at run time; torch.compile was 1.02-1.09x as fast (bench_inference.py) but
# compiles for tens of seconds per new input shape on CPU, which dominates any run of a few
# thousand images of mixed sizes.
DEFAULT_ATTENTION = "script"
PROTOCOLS = ("resize", "crops", "full")
# input pipelines (auto: "device" on CUDA, "cpu" elsewhere) and JPEG decoders of the device pipeline
PIPELINES = ("auto", "cpu", "device")
JPEG_DECODERS = ("auto", "pil", "torchvision")
# One test-time protocol for user-facing scores and reported figures alike (engine, CLI,
# adapters, training's validation and test, `bpclip evaluate`): see protocol.py.
DEFAULT_PROTOCOL = "resize"
