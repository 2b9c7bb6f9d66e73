"""Timing and reporting helpers: interleaved runs, the best of N, ratios, Markdown + JSON output.

The noise on a shared machine is interference: other work only ever makes a run slower. So the
estimator is the minimum of N interleaved runs per side (the run least disturbed), and each
row reports the spread it saw, (slowest - fastest) / fastest over both sides.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One measured comparison: ``value`` against ``baseline_value`` in the same run."""

    scenario: str
    variant: str
    unit: str
    value: float
    baseline: str
    baseline_value: float
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""
    extra: dict = field(default_factory=dict)
    #: (slowest - fastest) / fastest over the N runs of both sides: how noisy this row was
    spread: float | None = None

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.value / self.baseline_value if self.baseline_value else float("nan")
        return self.baseline_value / self.value if self.value else float("nan")

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(
    candidate: Callable[[], object], baseline: Callable[[], object], repeat: int,
    measure: Callable[[Callable[[], object]], float] = timed,
) -> tuple[float, float, float]:
    """Best seconds of ``candidate`` and ``baseline`` over ``repeat`` interleaved runs each (drift hits
    both alike), and the spread of the runs. ``measure`` reads one run: wall time by default."""
    cand: list[float] = []
    base: list[float] = []
    for i in range(repeat):
        order = [(candidate, cand), (baseline, base)] if i % 2 == 0 else [(baseline, base), (candidate, cand)]
        for fn, sink in order:
            sink.append(measure(fn))
    spread = max((max(side) - min(side)) / min(side) for side in (cand, base))
    return min(cand), min(base), spread


def compare_many(fns: dict[str, Callable[[], object]], repeat: int) -> tuple[dict[str, float], float]:
    """Best seconds of each of ``fns`` over ``repeat`` rounds, each round running them all in a
    rotated order; and the largest spread of any of them."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeat):
        for name in names[i % len(names):] + names[: i % len(names)]:
            runs[name].append(timed(fns[name]))
    spread = max((max(r) - min(r)) / min(r) for r in runs.values())
    return {name: min(r) for name, r in runs.items()}, spread


#: the ISA flags that decide the fast paths (issue 24): bf16 wants AMX or AVX-512-BF16, int8 VNNI
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info() -> dict[str, object]:
    """The CPU a run measured: model name, the ISA flags above it has, and the load averages."""
    import os

    model, flags = platform.processor() or "unknown", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"cpu_model": model, "isa": [f for f in ISA_FLAGS if f in flags], "load_avg": list(os.getloadavg()),
            "ticks": _cpu_ticks()}


def _cpu_ticks() -> list[int] | None:
    """All CPU time and the hypervisor's steal so far (/proc/stat, in ticks): on a virtual machine,
    stolen time is contention no load average shows (a run saw 19-29% of it on a "quiet" box)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return [sum(fields[:8]), fields[7]] if len(fields) >= 8 else None


def write_report(rows: list[Row], out_dir: Path, meta: dict) -> tuple[Path, Path]:
    """Write ``latest.json``; ``latest.md`` (and ``benchmarks/README.md`` for the default folder) are
    rendered from it by :mod:`benchmarks.render`, so the tables never drift from the figures."""
    from .render import README, readme, render

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "python": platform.python_version(), "machine": platform.machine(), "time": time.strftime("%F %T")}
    meta.setdefault("cpu", cpu_info())
    data = {"meta": meta, "rows": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in rows]}
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(data, indent=2))
    md_path = out_dir / "latest.md"
    md_path.write_text(render(data))
    if out_dir.resolve() == README.parent / "results":
        README.write_text(readme(data))
    return md_path, json_path
