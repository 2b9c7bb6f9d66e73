"""Run the benchmark scenarios: ``python -m benchmarks [--only core,startup] [--n 2000]``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import scenarios
from .harness import cpu_info, write_report
from .specs import BACKEND


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="sentences per throughput run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per side; the fastest counts")
    parser.add_argument("--only", default=",".join(scenarios.ALL), help=f"comma list of {', '.join(scenarios.ALL)}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # as in the CLI: the log shows figures only
    rows = []
    cpu_at_start = cpu_info()  # the load average before the run; write_report adds the one after
    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        if name not in scenarios.ALL:
            parser.error(f"unknown scenario {name!r}; known: {', '.join(scenarios.ALL)}")
        print(f"== {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        for row in scenarios.ALL[name](n=args.n, batch=args.batch, repeat=args.repeat):
            print(f"   {row.variant}: {row.value:,.2f} {row.unit} vs {row.baseline} {row.baseline_value:,.2f} "
                  f"-> ratio {row.ratio:.3f}", file=sys.stderr, flush=True)
            rows.append(row)
        print(f"   ({name}: {time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)  # where a run's time goes
    md, js = write_report(rows, args.out, {"n": args.n, "batch": args.batch, "cpus": os.cpu_count(), "repeat": args.repeat, "estimator": "minimum",
                                          "cpu_at_start": cpu_at_start, "backend": BACKEND})
    print(md.read_text())
    print(f"written: {md} {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
