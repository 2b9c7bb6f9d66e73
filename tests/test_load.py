"""Bounded load against both servers as deployed (`agent-embeddings serve` in a child process).

1,000 single-sentence requests from 32 concurrent clients to each server, on loopback: zero
errors, every vector equal to the in-process one, each one counted. Run with ``pytest -s`` to see
the figures. The 5,000 of the figures in docs/performance.md are ``python -m benchmarks.load``
(the same code) or ``AGENT_EMBEDDINGS_LOAD_REQUESTS=5000`` here: five times the minutes of CPU in
``make test`` for no assertion more.
"""

from __future__ import annotations

import os

import httpx
import pytest

from agent_embeddings.server.process import ServeProcess
from benchmarks.data import short_sentences
from benchmarks.load import grpc_caller, http_caller, run_load

pytestmark = pytest.mark.slow
# 31 rounds of all 32 clients per server; the result line says the count.
REQUESTS = int(os.environ.get("AGENT_EMBEDDINGS_LOAD_REQUESTS", "1000"))


@pytest.mark.timeout(1800)
def test_1000_requests_from_32_clients_against_each_server(default_spec, hf_manager):
    texts = short_sentences(500, seed=42)
    expected = hf_manager.encode("hf", texts)  # each distinct sentence once
    with ServeProcess(default_spec, http="127.0.0.1:0", grpc="127.0.0.1:0", args=["--metrics-port", "0"]) as served:
        results = []
        for kind, make in (("http", http_caller), ("grpc", grpc_caller)):
            result = run_load(kind, make(served.addresses[kind]), texts, expected, requests=REQUESTS, clients=32)
            print("\n" + result.line())
            results.append(result)
        metrics = httpx.get(f"http://{served.addresses['http']}/metrics").text
        assert httpx.get(f"http://{served.addresses['http']}/health").status_code == 200
        code = served.terminate()
    assert code == 0
    for result in results:
        assert result.errors == 0, result.first_error
        assert result.wrong == 0
    # one registry for both servers in one process: each one's requests are counted
    assert f'agent_embeddings_requests_total{{route="Embed",server="grpc",status="OK"}} {REQUESTS + 32}.0' in metrics
    assert f'agent_embeddings_requests_total{{route="/v1/embeddings",server="http",status="200"}} {REQUESTS + 32}.0' in metrics
    assert "serving metrics on http://127.0.0.1:" in served.output
