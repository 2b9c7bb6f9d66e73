"""Smoke test: every benchmark scenario runs on a tiny input, so the suite cannot rot. This file
runs the in-process scenarios; test_benchmarks_servers.py and test_benchmarks_engines.py the rest
(tests/_bench_smoke.py says why they are apart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._bench_smoke import GROUPS, REQUIRED, run_tiny


def test_the_smoke_tests_cover_every_required_scenario_once():
    named = [name for names in GROUPS.values() for name in names]
    assert sorted(named) == sorted(REQUIRED), "a scenario is missing from tests/_bench_smoke.GROUPS, or twice in it"


@pytest.mark.slow
def test_in_process_scenarios_run_on_a_tiny_input(root: Path, tmp_path: Path):
    run_tiny(GROUPS["in-process"], root, tmp_path)
