"""The plumbing remote backends share (``backends/remote.py``), through a small HTTP backend written
on it the way a new built-in would be (a Cohere-style ``/embed`` API: ``texts`` and ``input_type``
in, ``embeddings`` out), answered by ``httpx.MockTransport``: statuses, Retry-After, stalls and
drops, on the sync and the async path."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import Field, SecretStr

from agent_embeddings import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    ConfigurationError,
    ModelItem,
    RateLimitError,
)
from agent_embeddings.backends.remote import Endpoint, HttpClients, PerLoop, RemoteParams, resolve_api_key
from agent_embeddings.base import AbstractEmbeddingGenerator
from agent_embeddings.flow import Flow, arun, run
from agent_embeddings.results import BackendResult
from agent_embeddings.vectors import InputType

from ._faults import Trickler, outcome_within


# -- the example backend: what a new HTTP backend is (about 35 lines) -----------------------
class EchoParams(RemoteParams):
    base_url: str = Field(description="Endpoint, e.g. https://api.example.com/v1.")
    timeout_s: float = Field(default=30.0, gt=0)


class EchoHttpEmbeddings(AbstractEmbeddingGenerator):
    provider = "echo"
    Params = EchoParams
    takes_input_type = True
    params: EchoParams

    def __init__(self, params: EchoParams | None = None, *, model: str | None = None, name: str | None = None,
                 **options: Any) -> None:
        params = self.options(params, options, who=f"echo generator {name or model!r}")
        super().__init__(params, model=model, name=name)
        self.endpoint = Endpoint(params.base_url)
        key = resolve_api_key(params, who=self._who(), endpoint=self.endpoint.shown)
        headers = {"authorization": SecretStr(f"Bearer {key.get_secret_value()}")} if key else {}
        self._http = HttpClients(self.endpoint, timeout_s=params.timeout_s, transport=params.http_transport,
                                 headers=headers)

    def _embed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> BackendResult:
        return run(self._flow(texts, input_type))

    async def _aembed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> BackendResult:
        return await arun(self._flow(texts, input_type))

    def _flow(self, texts: list[str], input_type: InputType | None) -> Flow[BackendResult]:
        body = {"model": self.model, "texts": texts, "input_type": input_type or "document"}
        response = yield from self._http.post("/embed", body, where=f"{self._who()} at {self.endpoint.shown}")
        return BackendResult(np.asarray(response.json()["embeddings"], dtype=np.float32), None)


# -- the tests -----------------------------------------------------------------------------------
URL = "http://127.0.0.1:9/v1"  # loopback: no key required; never dialled


class Script:
    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        reply = self.replies.pop(0) if self.replies else None
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        texts = json.loads(request.content)["texts"]
        return httpx.Response(200, json={"embeddings": [[float(len(t)), 1.0] for t in texts]})


def gen_for(script: Script, **options: Any) -> EchoHttpEmbeddings:
    return EchoHttpEmbeddings(model="e", base_url=URL, normalize=False, http_transport=httpx.MockTransport(script),
                              retry={"attempts": 3, "initial_backoff_s": 0.0, "max_backoff_s": 0.0}, **options)


def embed(gen: EchoHttpEmbeddings, texts: list[str], path: str) -> np.ndarray:
    return gen.encode(texts, input_type="query") if path == "sync" else asyncio.run(
        gen.aencode(texts, input_type="query"))


PATHS = pytest.mark.parametrize("path", ["sync", "async"])


@PATHS
def test_a_new_http_backend_embeds_and_sends_input_type(path):
    script = Script()
    assert embed(gen_for(script), ["ab", "abcd"], path).tolist() == [[2.0, 1.0], [4.0, 1.0]]
    assert b'"input_type":"query"' in script.seen[0].content and script.seen[0].url.path == "/v1/embed"


@PATHS
def test_429_with_retry_after_then_success(path):
    script = Script(httpx.Response(429, headers={"retry-after-ms": "200"}, json={"message": "slow down"}))
    gen = gen_for(script)
    started = time.monotonic()
    assert embed(gen, ["x"], path).shape == (1, 2)
    assert len(script.seen) == 2 and time.monotonic() - started >= 0.19  # the server's wait, not the zero backoff


@PATHS
def test_statuses_stalls_and_drops_are_the_sdk_errors(path):
    cases = [
        (httpx.Response(401, json={"error": {"message": "bad key"}}), AuthenticationError, "HTTP 401: bad key"),
        (httpx.Response(400, json={"message": "too long"}), BadRequestError, "HTTP 400: too long"),
        (httpx.Response(429, json={"message": "quota"}), RateLimitError, "HTTP 429: quota"),
        (httpx.ReadTimeout("stalled"), BackendTimeoutError, "no answer within 30s"),
        (httpx.RemoteProtocolError("Server disconnected"), BackendUnavailableError, "cannot connect.*disconnected"),
    ]
    for reply, kind, message in cases:
        retried = kind in (RateLimitError, BackendTimeoutError, BackendUnavailableError)
        script = Script(*[reply] * (3 if retried else 1))
        with pytest.raises(kind, match=message):
            embed(gen_for(script), ["x"], path)
        assert len(script.seen) == (3 if retried else 1)


@PATHS
def test_a_trickling_server_cannot_outlast_the_timeout(path):
    """timeout_s bounds the whole request on both paths (httpx's timeouts bound each socket read,
    which a server sending a byte every 0.2 s never trips: before, the sync call ran for ~30 min)."""
    trickler = Trickler(interval_s=0.2)
    clients = HttpClients(Endpoint(trickler.url), timeout_s=1.5)

    def call() -> object:
        flow = clients.post("/embed", {"texts": ["x"]}, where="trickle")
        return run(flow) if path == "sync" else asyncio.run(arun(flow))

    outcome, elapsed = outcome_within(call, 1.5 + 5)
    trickler.close()
    clients.close()
    assert outcome, f"still running after {elapsed:.1f} s against a timeout of 1.5 s"
    assert isinstance(outcome[0], BackendTimeoutError), outcome[0]
    assert elapsed < 1.5 + 1.0, elapsed  # the margin: a busy 2-core box's scheduling


def test_the_key_rule_and_no_key_in_any_text(monkeypatch, caplog):
    with pytest.raises(ConfigurationError, match="no API key for https://api.example.com/v1"):
        EchoHttpEmbeddings(model="e", base_url="https://api.example.com/v1")
    monkeypatch.setenv("ECHO_KEY", "sk-echo-0123456789abcdef")
    script = Script(httpx.Response(401, json={"message": "key sk-echo-0123456789abcdef refused"}))
    gen = EchoHttpEmbeddings(model="e", base_url="https://api.example.com/v1?token=tok-0123456789abcdef", api_key_ref="env:ECHO_KEY",
                             http_transport=httpx.MockTransport(script))
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as caught:
        gen.encode(["x"])
    assert script.seen[0].headers["authorization"] == "Bearer sk-echo-0123456789abcdef"
    assert script.seen[0].url.params["token"] == "tok-0123456789abcdef"
    shown = str(caught.value) + repr(gen) + repr(gen.params) + caplog.text
    assert "sk-echo" not in shown and "tok-0123" not in shown


def test_built_from_a_spec_item_like_any_backend():
    item = ModelItem(llm_type="embeddings", llm_block_id="echo:e", llm_parameters={"base_url": URL, "timeout_s": 2.0})
    gen = EchoHttpEmbeddings.from_model_item(item)
    assert gen.model == "e" and gen.params.timeout_s == 2.0
    bad = ModelItem(llm_type="embeddings", llm_block_id="echo:e", llm_parameters={"base_url": URL, "http_transport": "x"})
    with pytest.raises(Exception, match="http_transport"):
        EchoHttpEmbeddings.from_model_item(bad)


def test_per_loop_gives_each_event_loop_its_own():
    made = PerLoop(object)

    async def get() -> object:
        return made.get()

    first, second = asyncio.run(get()), asyncio.run(get())
    assert first is not second


def test_resolve_api_key_loopback_and_explicit_requirement():
    assert resolve_api_key(RemoteParams(), who="g", endpoint="http://localhost:8000/v1") is None
    with pytest.raises(ConfigurationError, match="no API key"):
        resolve_api_key(RemoteParams(api_key_required=True), who="g", endpoint="http://localhost:8000/v1")
    assert resolve_api_key(RemoteParams(), who="g", endpoint="https://x.example/v1", required_default=False) is None
