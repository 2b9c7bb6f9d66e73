"""What an ``hf:`` item's numbers are: fp32, bf16 (chosen by ``precision: auto`` on CPUs with native
bf16 math) or the onnx paths' own (fp32, int8 of a named recipe). Part of the space identity."""

from __future__ import annotations

import functools
from typing import Literal

from .._deps import ONNX_MODULES, installed
from .onnx_export import RECIPE_VERSION

__all__ = ["BF16_CPU_FLAGS", "cpu_flags", "effective_precision", "resolve_backend", "resolve_precision"]

#: CPU flags (Linux /proc/cpuinfo names) of native bfloat16 matrix math; without them torch emulates bf16
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache  # the CPU does not change under a running process: read the file once
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not there)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def resolve_precision(precision: str, device: str, flags: frozenset[str] | None = None) -> Literal["fp32", "bf16"]:
    """``auto``: bf16 on a CPU with native bf16 math (AMX or AVX-512-BF16), else fp32; ``fp32`` and
    ``bf16`` as asked. Emulated bf16 (AVX2, AVX-512F alone) is several times slower than fp32."""
    if precision == "bf16":
        return "bf16"
    if precision == "auto" and device == "cpu":
        flags = cpu_flags() if flags is None else flags
        return "bf16" if any(f in flags for f in BF16_CPU_FLAGS) else "fp32"
    return "fp32"  # a GPU under auto keeps fp32: its fast path is a choice of the spec


def effective_precision(backend: str, precision: str, device: str, flags: frozenset[str] | None = None) -> str:
    """What the vectors' numbers are: the onnx paths have their own (fp32, int8); torch's follow ``precision``.

    int8 names its recipe (``int8-r3``): a new recipe moves every vector (recipe 3's GELU: ~1e-3 in
    cosine), so an index built with another recipe is another space, and its identity says so
    before its probes have to."""
    if backend == "onnx-int8":
        return f"int8-r{RECIPE_VERSION}"
    return "fp32" if backend == "onnx" else resolve_precision(precision, device, flags)


def resolve_backend(
    backend: str, precision: str, device: str, flags: frozenset[str] | None = None, onnx: bool | None = None
) -> str:
    """The engine ``backend: auto`` stands for on ``device`` (resolved: "cpu", "cuda", ...): ONNX
    Runtime fp32 (``onnx``) on the CPU where the ``onnx`` extra is installed (``onnx``: whether it is)
    and the numbers stay fp32, else ``torch``. ONNX Runtime's fp32 vectors are torch's to ~1e-7 (one
    space), and on the CPU it runs a forward pass of one sentence 3.6x as fast and batches of 64
    1.3x (benchmarks scenario 5, 2-core AVX2 CPU); on a GPU, or for bf16, torch is the fast path.

    >>> resolve_backend("auto", "fp32", "cpu", onnx=True), resolve_backend("auto", "fp32", "cuda", onnx=True)
    ('onnx', 'torch')
    """
    if backend != "auto":
        return backend
    if device != "cpu" or resolve_precision(precision, device, flags) != "fp32":
        return "torch"
    return "onnx" if (installed(*ONNX_MODULES) if onnx is None else onnx) else "torch"
