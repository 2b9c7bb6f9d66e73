"""The benchmark pictures are drawn from the results' JSON: each plot file is produced by
``python -m benchmarks.plots`` into a temporary folder, its bars carry the JSON's figures, a plot
without rows is left out saying so, and benchmarks/README.md shows every picture that is committed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")  # the dev extra has it; a bare install of the package does not need it

from benchmarks import plots  # noqa: E402
from benchmarks.render import PLOTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PNG = b"\x89PNG\r\n\x1a\n"


def test_every_plot_is_drawn_from_the_json_into_a_folder_of_ones_choice(tmp_path: Path):
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results, ignore=shutil.ignore_patterns("*.png", "*.md"))
    out = tmp_path / "pictures"
    run = subprocess.run([sys.executable, "-m", "benchmarks.plots", "--results", str(results), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    drawn = {str(p.relative_to(out)) for p in out.rglob("*.png")}
    assert drawn == set(PLOTS), run.stderr  # the committed results hold rows for every picture
    for name in drawn:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name  # a real picture, not an empty canvas

    # Without the runs it needs, a plot is left out, and the command says which.
    shutil.rmtree(results / "bulk")
    shutil.rmtree(results / "bulk-memory")
    again = subprocess.run([sys.executable, "-m", "benchmarks.plots", "--results", str(results), "--out",
                            str(tmp_path / "fewer")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and not (tmp_path / "fewer" / "bulk" / "bulk.png").exists()
    assert f"left out: bulk/bulk.png: no rows for it in {results}" in again.stderr


def test_the_bars_carry_the_figures_of_the_json(tmp_path: Path):
    """Change a figure in the JSON: the bar changes with it."""
    data = json.loads((RESULTS / "latest.json").read_text())
    row = next(r for r in data["rows"] if r["scenario"] == "3 http" and r["variant"].startswith("16 clients"))
    row["value"] = 123.0
    (tmp_path / "latest.json").write_text(json.dumps(data))
    fig = plots.throughput(plots.load(tmp_path))
    assert fig is not None
    heights = [round(bar.get_height(), 6) for bar in fig.axes[0].patches]
    assert 123.0 in heights
    expected_batches = next(r["value"] for r in data["rows"] if r["scenario"] == "1 core"
                            and r["variant"].startswith("manager.encode"))
    assert round(expected_batches, 6) in heights
    quantized = next(r for r in data["rows"] if r["variant"].startswith("hf backend=onnx-int8"))
    int8 = plots.int8(plots.load(tmp_path))
    assert int8 is not None
    xs = [line.get_xdata()[0] for line in int8.axes[0].lines if len(line.get_xdata()) == 1]
    assert round(quantized["ratio"], 6) in [round(x, 6) for x in xs]


def test_the_readme_shows_every_picture_and_each_is_committed():
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    for name in PLOTS:
        assert f"](results/{name})" in readme, name
        assert (RESULTS / name).read_bytes().startswith(PNG), f"{name}: run python -m benchmarks.plots"
    from benchmarks.render import OTHER_TABLES

    folders = {p.parent.name for p in RESULTS.glob("*/latest.json")}
    assert folders == set(OTHER_TABLES), "list each results/<run>/ in render.OTHER_TABLES"
    makefile = (ROOT / "Makefile").read_text()
    assert "python -m benchmarks.plots" in makefile
