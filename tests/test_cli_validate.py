"""``agent-embeddings validate``: the spec's shape anywhere (unresolved keys are warnings), and with
``--check`` every item resolved here, one line each: local weights, our real HTTP and gRPC servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.http import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def validate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "agent_embeddings", "validate", *args], capture_output=True,
                          text=True, env=environ, cwd=ROOT, timeout=120)


def spec_file(tmp_path: Path, *items: dict) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"subject_id": "t", "models": [{"llm_type": "embeddings", **i} for i in items]}))
    return path


def hf(name: str, model: str = MINILM, **params) -> dict:
    return {"name": name, "llm_block_id": f"hf:{model}", "llm_parameters": {"device": "cpu", **params}}


def test_the_shipped_openai_specs_validate_without_a_key_and_warn_about_it():
    """Once: 'error: ... no API key' and exit 1 unless OPENAI_API_KEY was set."""
    result = validate("specs/agent-rag.json", "specs/agent-retriever.json")
    assert result.returncode == 0, result.stderr
    assert "specs/agent-rag.json: ok (2 embedding generator(s), 0 other item(s))" in result.stdout
    assert "specs/agent-retriever.json: ok (3 embedding generator(s), 0 other item(s))" in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(
        line.startswith("agent-embeddings: warning: specs/agent-r") and "models[0] (openai:text-embedding-3-small): "
        "not resolved here: openai generator 'text-embedding-3-small': no API key" in line
        and line.endswith("(validate --check fails on it)") for line in warnings), result.stderr
    # --check is the strict one: the same spec fails, on that item
    strict = validate("--check", "specs/agent-rag.json", env={"AGENT_EMBEDDINGS_DEVICE": "cpu"})
    assert strict.returncode == 1
    lines = strict.stdout.splitlines()
    assert lines[0] == "specs/agent-rag.json: 1 of 2 failed (2 embedding generator(s), 0 other item(s))"
    assert lines[1].startswith("  FAIL  openai:text-embedding-3-small: openai text-embedding-3-small: openai "
                               "generator 'text-embedding-3-small': no API key for https://api.openai.com/v1")
    assert lines[2].startswith("  ok    hf:sentence-transformers/all-MiniLM-L6-v2 (also: hf): hf ") and \
        "model files in " in lines[2] and lines[2].endswith("; device cpu")


def test_a_spec_error_still_fails_validate(tmp_path: Path):
    bad = spec_file(tmp_path, hf("x", normalise=True))
    result = validate(str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert "llm_parameters.normalise: unknown field (did you mean 'normalize'?)" in result.stderr


def test_check_resolves_local_models_without_loading_them(tmp_path: Path):
    path = spec_file(tmp_path, hf("good"), hf("typo", "sentence-transformers/all-MiniLM-L6-v3"))
    code = ("import sys; from agent_embeddings.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'loaded torch'; raise SystemExit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "validate", "--check", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    head, good, typo = result.stdout.splitlines()
    assert head == f"{path}: 1 of 2 failed (2 embedding generator(s), 0 other item(s))"
    assert good.startswith(f"  ok    good (also: hf:{MINILM}): hf {MINILM}: model files in ")
    assert typo.startswith("  FAIL  typo (also: hf:sentence-transformers/all-MiniLM-L6-v3): hf "
                           "sentence-transformers/all-MiniLM-L6-v3: model 'sentence-transformers/all-MiniLM-L6-v3' "
                           "not found locally; looked in: ")
    report = json.loads(validate("--check", "--json", str(path)).stdout)
    assert report["ok"] is False and report["error"] is None
    assert [(g["name"], g["item"], g["status"]) for g in report["generators"]] == [
        ("good", "models[0]", "ok"), ("typo", "models[1]", "failed")]


def test_check_asks_the_http_endpoint_for_the_model_with_the_key(hf_manager, tmp_path: Path):
    config = ServerConfig(api_keys=(SecretStr("sk-right-4f9a0c"),))
    with serve_in_thread(hf_manager, config=config) as server:
        url = f"http://{server.address}/v1"
        items = [
            {"name": "served", "llm_block_id": "openai:hf-minilm",
             "llm_parameters": {"base_url": url, "api_key_ref": "env:RIGHT_KEY"}},
            {"name": "misspelt", "llm_block_id": "openai:hf-minilm-l6",
             "llm_parameters": {"base_url": url, "api_key_ref": "env:RIGHT_KEY"}},
            {"name": "wrong-key", "llm_block_id": "openai:hf-minilm",
             "llm_parameters": {"base_url": url, "api_key_ref": "env:WRONG_KEY"}},
            {"name": "no-key", "llm_block_id": "openai:hf-minilm",
             "llm_parameters": {"base_url": url, "api_key_ref": "env:UNSET_KEY"}},
            {"name": "nobody-there", "llm_block_id": "openai:hf-minilm",
             "llm_parameters": {"base_url": "http://127.0.0.1:9/v1", "api_key_required": False}},
        ]
        path = spec_file(tmp_path, *items)
        result = validate("--check", str(path), env={"RIGHT_KEY": "sk-right-4f9a0c", "WRONG_KEY": "sk-wrong-77c1e2"})
    assert result.returncode == 1, result.stderr
    lines = {line[8:].split(":")[0].split(" (also")[0]: line for line in result.stdout.splitlines()[1:]}
    assert lines["served"].startswith("  ok    served: openai hf-minilm: ") and lines["served"].endswith(
        f"{url} serves 'hf-minilm', key accepted")
    assert lines["misspelt"].startswith("  FAIL  ") and f"{url} does not serve 'hf-minilm-l6'; it lists: " in \
        lines["misspelt"] and "hf-minilm" in lines["misspelt"].split("it lists: ")[1]
    assert lines["wrong-key"].startswith("  FAIL  ") and "401" in lines["wrong-key"]
    assert lines["no-key"].startswith("  FAIL  ") and "environment variable UNSET_KEY" in lines["no-key"]
    assert lines["nobody-there"].startswith("  FAIL  ") and "127.0.0.1:9" in lines["nobody-there"]
    assert "sk-right" not in result.stdout + result.stderr and "sk-wrong" not in result.stdout + result.stderr


def test_check_asks_the_grpc_server_for_the_model(hf_manager, runner, tmp_path: Path):
    server = runner.grpc_server(hf_manager)
    try:
        path = spec_file(
            tmp_path,
            {"name": "served", "llm_block_id": "aios:hf-minilm", "llm_parameters": {"grpc_url": server.address}},
            {"name": "misspelt", "llm_block_id": "aios:hf-minilm-l6", "llm_parameters": {"grpc_url": server.address}},
            {"name": "wrong-dims", "llm_block_id": "aios:hf-minilm",
             "llm_parameters": {"grpc_url": server.address, "dims": 768}},
        )
        result = validate("--check", "--json", str(path))
    finally:
        runner.stop(server)
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["ok"] is False
    status = {g["name"]: (g["status"], g["detail"]) for g in report["generators"]}
    assert status["served"] == ("ok", f"{server.address} serves 'hf-minilm' (384 dims)")
    assert status["misspelt"][0] == "failed" and "does not serve 'hf-minilm-l6'; served: " in status["misspelt"][1]
    assert status["wrong-dims"][0] == "failed" and "declared dims=768" in status["wrong-dims"][1]


@pytest.mark.parametrize("flags", [[], ["--check"]])
def test_json_is_one_object_per_file_with_the_error_of_a_bad_spec(tmp_path: Path, default_spec: Path, flags):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = validate(*flags, "--json", str(default_spec), str(bad))
    assert result.returncode == 1 and result.stderr == ""
    good, broken = (json.loads(line) for line in result.stdout.splitlines())
    assert good["ok"] is True and good["generators"][0]["status"] == ("ok" if flags else "valid")
    assert broken == {"file": str(bad), "ok": False, "error": f"{bad}: invalid JSON at line 1, column 2: "
                      "Expecting property name enclosed in double quotes", "generators": [], "skipped": []}
