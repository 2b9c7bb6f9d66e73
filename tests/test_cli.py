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


# -- issue 19 ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-concurrency", "0"), ("--max-concurrency", "-1"), ("--max-inputs", "0"),
        ("--max-request-bytes", "-1"), ("--max-request-bytes", str(2**31)),  # gRPC sizes are int32
        ("--max-input-chars", "-3"), ("--grace-period", "nan"), ("--grace-period", "-5"),
        ("--grace-period", "inf"), ("--metrics-port", "70000"),
    ],
)
def test_finding_15_serve_refuses_a_bad_limit_in_one_line_before_loading_the_spec(flag, value, tmp_path, capsys):
    """Once accepted: 0/-1 answered 429 or 413 to every request, -1 lifted gRPC's limit, nan was an
    'unexpected ValueError'. The spec named here does not exist: the flag must be refused first."""
    from agent_embeddings.cli import main

    missing = tmp_path / "never-read.json"
    code = main(["serve", "--spec", str(missing), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", flag, value])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("agent-embeddings: error: ") and flag in err and "unexpected" not in err, err
    assert "never-read" not in err


def test_finding_16_serve_logs_one_access_line_per_request_by_default_and_obeys_log_level(light_spec):
    """Both servers of one ``serve``: an INFO line per request on stderr by default (once: none, and
    no 4xx either); ``--log-level warning`` turns them off."""
    import grpc
    import httpx

    from agent_embeddings.protocol.convert import pb
    from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2_grpc as pb_grpc
    from agent_embeddings.server.process import ServeProcess

    from ._grpc_support import wait_for

    env = {"AGENT_EMBEDDINGS_LOAD_PLUGINS": ""}
    outputs = []
    for args in ([], ["--log-level", "warning"]):
        with ServeProcess(light_spec(), http="127.0.0.1:0", grpc="127.0.0.1:0", args=args, env=env) as served:
            http = f"http://{served.addresses['http']}"
            assert httpx.get(f"{http}/v1/models").status_code == 200
            assert httpx.post(f"{http}/v1/embeddings", json={"model": "nope", "input": "a text"}).status_code == 404
            with grpc.insecure_channel(served.addresses["grpc"]) as channel:
                assert pb_grpc.EmbeddingServiceStub(channel).Info(pb.InfoRequest(), timeout=10).models
            if not args:
                wait_for(lambda: served.output.count("agent_embeddings.access") >= 3)
            assert served.terminate() == 0, served.output
        outputs.append(served.output)
    default, quiet = outputs
    access = [line.split("agent_embeddings.access: ")[1] for line in default.splitlines() if "agent_embeddings.access" in line]
    assert len(access) == 3 and all(" INFO agent_embeddings.access: " in line for line in default.splitlines()
                                    if "agent_embeddings.access" in line), default
    assert access[0].startswith("http GET /v1/models 200 texts=- ")
    assert access[1].startswith("http POST /v1/embeddings 404 texts=1 ") and access[1].endswith(" error=model_not_found")
    assert access[2].startswith("grpc Info OK texts=- ")
    assert "a text" not in default
    assert "agent_embeddings.access" not in quiet and " INFO " not in quiet, quiet


_HIDE_MODULE = '''
import importlib.abc, sys

class _Hide(importlib.abc.MetaPathFinder):
    """This interpreter behaves as if {name!r} were not installed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == {name!r} or fullname.startswith({name!r} + "."):
            raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)
        return None

sys.meta_path.insert(0, _Hide())
'''


@pytest.mark.parametrize(("hidden", "server"), [("prometheus_client", "--http"), ("fastapi", "--http"), ("grpc", "--grpc")])
def test_finding_18_serve_without_the_server_extra_says_how_to_install_it(hidden, server, light_spec, tmp_path):
    """The extra is simulated missing: a ``sitecustomize`` on PYTHONPATH hides the module from the
    CLI's interpreter (once: 'unexpected ModuleNotFoundError: prometheus_client', after the spec loaded)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_HIDE_MODULE.format(name=hidden))
    pythonpath = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run("serve", "--spec", str(light_spec()), server, "127.0.0.1:0", env={"PYTHONPATH": pythonpath})
    assert_one_line_error(result, "'server' extra", f"{hidden} is not installed", "pip install 'agent-embeddings[server]'")
