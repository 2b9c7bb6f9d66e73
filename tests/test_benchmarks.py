"""Smoke test: every benchmark scenario runs on a tiny input, so the suite cannot rot
(tests/_bench_smoke.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._bench_smoke import GROUPS, REQUIRED, run_tiny


def test_the_smoke_tests_cover_every_required_scenario_once():
    named = [name for names in GROUPS.values() for name in names]
    assert sorted(named) == sorted(REQUIRED), "a scenario is missing from tests/_bench_smoke.GROUPS, or twice in it"


@pytest.mark.slow
def test_every_scenario_runs_on_a_tiny_input(root: Path, tmp_path: Path):
    run_tiny([name for names in GROUPS.values() for name in names], root, tmp_path)
