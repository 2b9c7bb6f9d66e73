"""The agent-embeddings command: real subprocesses, real model, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent_embeddings.specs import subject_spec_schema

CLI = [sys.executable, "-m", "agent_embeddings"]


def run(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, env=environ, timeout=180)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agent-embeddings: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.slow
def test_embed_arguments_and_stdin_as_json_lines(default_spec: Path, hf_manager):
    texts = ["What is AI?", "A man is eating food."]
    result = run("embed", "--spec", str(default_spec), "--include-text", *texts)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["index"], r["text"]) for r in rows] == [(0, texts[0]), (1, texts[1])]
    expected = hf_manager.encode("hf", texts)
    assert np.abs(np.array([r["embedding"] for r in rows]) - expected).max() <= 1e-5

    piped = run("embed", "--spec", str(default_spec), "--name", "hf", stdin="\n".join(texts) + "\n")
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(line)["embedding"] for line in piped.stdout.splitlines()] == [r["embedding"] for r in rows]


@pytest.mark.slow
def test_embed_summary_and_progress(default_spec: Path):
    lines = "\n".join(f"sentence number {i}" for i in range(300))
    result = run("embed", "--spec", str(default_spec), "--progress", stdin=lines)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 300
    assert "300/300 texts" in result.stderr
    summary = run("embed", "--spec", str(default_spec), "--format", "summary", "hello")
    assert "dims=384 norm=1.0000 first=[" in summary.stdout


def test_embed_errors_are_one_line(default_spec: Path, tmp_path: Path):
    assert_one_line_error(run("embed", "--spec", str(tmp_path / "missing.json"), "x"), "spec file not found")
    assert_one_line_error(
        run("embed", "--spec", str(default_spec), "--name", "nope", "x"),
        "unknown generator 'nope'; known generators: hf, hf-minilm, hf:sentence-transformers/all-MiniLM-L6-v2",
    )
    assert_one_line_error(run("embed", "--spec", str(default_spec), stdin="a\n\nb\n"), "stdin line 2 is empty")
    assert_one_line_error(run("embed", "--spec", str(default_spec), stdin=""), "no text given")


def test_validate_good_and_bad_specs_without_torch(default_spec: Path, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"subject_id": "x", "models": [{"llm_type": "embeddings", "llm_block_id": "zz:y"}]}')
    code = (
        "import sys; from agent_embeddings.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'validate imported torch'; raise SystemExit(rc)"
    )
    ok = subprocess.run([sys.executable, "-c", code, "validate", str(default_spec)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"{default_spec}: ok (1 embedding generator(s), 0 other item(s))" in ok.stdout
    assert "hf-minilm (also: hf:sentence-transformers/all-MiniLM-L6-v2, hf): hf" in ok.stdout
    result = subprocess.run([sys.executable, "-c", code, "validate", str(bad)], capture_output=True, text=True)
    assert_one_line_error(result, "bad.json: models[0] ('zz:y'): unknown backend prefix 'zz:'")


def test_backends_and_schema_without_torch():
    code = (
        "import sys, contextlib, io; from agent_embeddings.cli import main\n"
        "for cmd in (['backends'], ['schema']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()): assert main(cmd) == 0\n"
        "assert 'torch' not in sys.modules\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
    table = run("backends").stdout.splitlines()
    assert table[0].split() == ["prefix", "factory", "distribution", "version"]
    assert any(line.split()[:3] == ["hf", "agent_embeddings.backends.huggingface.HuggingFaceEmbeddingGenerator"
                                    ".from_model_item", "agent-embeddings"] for line in table[1:])
    assert json.loads(run("schema").stdout) == subject_spec_schema()


def test_usage_errors_exit_2():
    result = run("embed")
    assert result.returncode == 2 and "--spec" in result.stderr and "Traceback" not in result.stderr
