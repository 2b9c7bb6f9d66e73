"""What the benchmark smoke tests share: run some scenarios on a tiny input and check their rows.

The scenarios run in one test file, as three named groups. Split over three files (so that
``make test``'s workers, which take whole files, run them side by side) they put every Ray-heavy
test of the suite on the cores at once, and two Ray tests ran past their 300 s guards on a box
with 19-29% of its CPU stolen: one file it stays. The figures mean nothing at this size;
``make bench`` gives the real ones.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import scenarios

#: Every scenario the smoke tests run, by test file (the optional ones need a peer venv, wrk or a
#: cluster: ``make bench``). tests/test_benchmarks.py checks that these cover every required one.
GROUPS = {
    "in-process": ["core", "threads", "mixed", "fill", "startup", "cache", "memory", "sync", "search", "adapters",
                   "precision"],
    "servers": ["http", "grpc", "idle"],
    "engines": ["onnx", "bulk", "ray"],
}
REQUIRED = [name for name in scenarios.ALL if name not in scenarios.OPTIONAL]


def run_tiny(names: list[str], root: Path, tmp_path: Path) -> None:
    """``python -m benchmarks --only names`` at n=16; every scenario gives rows with real figures."""
    env = {k: v for k, v in os.environ.items() if k != "AGENT_EMBEDDINGS_LOAD_PLUGINS"}
    env["AGENT_EMBEDDINGS_CACHE_DIR"] = str(tmp_path / "cache")  # the ONNX export lands here, not in ~
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--n", "16", "--batch", "8", "--repeat", "1", "--out", str(tmp_path / "results"),
         "--only", ",".join(names)],
        cwd=root, capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "results" / "latest.json").read_text())
    seen = {row["scenario"].split()[1] for row in data["rows"]}
    assert seen == set(names), f"scenarios without rows: {set(names) - seen}"
    for row in data["rows"]:
        assert row["value"] > 0 and row["baseline_value"] > 0 and math.isfinite(row["ratio"]), row
    table = (tmp_path / "results" / "latest.md").read_text()
    assert "| scenario | variant | value | baseline | ratio | target | spread |" in table
    assert all(row["spread"] is not None and row["spread"] >= 0 for row in data["rows"] if row["unit"] != "ms")
