"""Smoke test: every benchmark scenario runs on a tiny input, so the suite cannot rot.

The figures mean nothing at this size; `make bench` gives the real ones. One test in one file on
purpose: split over three files (so that make test's workers, which take whole files, run them side
by side) it put every Ray-heavy test of the suite on the cores at once, and two Ray tests ran past
their 300 s guards on a box with 19-29% of its CPU stolen by the hypervisor.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import scenarios

# The optional peer scenario needs its own venv (make peer); it is left to `make bench`.
REQUIRED = [name for name in scenarios.ALL if name not in scenarios.OPTIONAL]


@pytest.mark.slow
def test_every_scenario_runs_on_a_tiny_input(root: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "AGENT_EMBEDDINGS_LOAD_PLUGINS"}
    # AGENT_EMBEDDINGS_CACHE_DIR is the suite's own: the ONNX export (15 s of CPU here) and the int8 graph
    # (6 s) that the rest of the suite makes or finds there are not made again in a folder of this test's
    # the spec's servers and Ray actors on ONNX Runtime: they start without importing torch (~10 s of
    # CPU each; the run alone took 180 s, and it is make test's longest test)
    env["AGENT_EMBEDDINGS_BENCH_BACKEND"] = "onnx"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--n", "16", "--batch", "8", "--repeat", "1", "--out", str(tmp_path / "results"),
         "--only", ",".join(REQUIRED)],
        cwd=root, capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert data["meta"]["backend"] == "onnx"
    seen = {row["scenario"].split()[1] for row in data["rows"]}
    assert seen == set(REQUIRED), f"scenarios without rows: {set(REQUIRED) - seen}"
    for row in data["rows"]:
        assert row["value"] > 0 and row["baseline_value"] > 0 and math.isfinite(row["ratio"]), row
    table = (tmp_path / "results" / "latest.md").read_text()
    assert "| scenario | variant | value | baseline | ratio | target | spread |" in table
    assert all(row["spread"] is not None and row["spread"] >= 0 for row in data["rows"] if row["unit"] != "ms")
