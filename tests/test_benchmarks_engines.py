"""Smoke test of the benchmark scenarios on ONNX Runtime and the bulk engine (tests/_bench_smoke.py;
Ray's runs in tests/test_bulk_ray.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._bench_smoke import GROUPS, run_tiny


@pytest.mark.slow
def test_engine_scenarios_run_on_a_tiny_input(root: Path, tmp_path: Path):
    run_tiny(GROUPS["engines"], root, tmp_path)
