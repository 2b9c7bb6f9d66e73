"""Smoke test of the benchmark scenarios that start servers (tests/_bench_smoke.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._bench_smoke import GROUPS, run_tiny


@pytest.mark.slow
def test_server_scenarios_run_on_a_tiny_input(root: Path, tmp_path: Path):
    run_tiny(GROUPS["servers"], root, tmp_path)
