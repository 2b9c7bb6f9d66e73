"""The OpenAI-compatible HTTP server: real uvicorn on 127.0.0.1, the official openai client, the real model."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from pydantic import SecretStr

from agent_embeddings import EmbeddingGeneratorManager
from agent_embeddings.errors import BackendUnavailableError
from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.http import HttpServer, serve_in_thread
from agent_embeddings.server.process import ServeProcess

from ._metrics_support import access_lines, by, samples
from .fakes import SlowGenerator


@pytest.fixture(scope="module")
def server(hf_manager: EmbeddingGeneratorManager) -> Iterator[HttpServer]:
    with serve_in_thread(hf_manager, config=ServerConfig(max_inputs=16, max_request_bytes=64 * 1024)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: HttpServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{server.address}/v1", api_key="unused", max_retries=0)


def _post(server: HttpServer, body: object = None, **kwargs: object) -> httpx.Response:
    return httpx.post(f"http://{server.address}/v1/embeddings", json=body, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_http_default_base64_matches_in_process(client, hf_manager, sentences):
    response = client.embeddings.create(model="hf-minilm", input=sentences)  # the client asks for base64
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert [d.index for d in response.data] == list(range(len(sentences)))
    assert np.abs(got - hf_manager.encode("hf", sentences)).max() <= 1e-5
    assert response.model == "hf-minilm" and response.object == "list"
    assert response.usage.prompt_tokens == hf_manager.get("hf").count_tokens(sentences) > len(sentences)
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_http_float_encoding_and_alias(client, hf_manager, sentences):
    response = client.embeddings.create(model="hf", input=sentences[0], encoding_format="float")
    assert len(response.data) == 1 and isinstance(response.data[0].embedding, list)
    got = np.array(response.data[0].embedding, dtype=np.float32)
    assert np.abs(got - hf_manager.encode("hf", sentences[:1])[0]).max() <= 1e-5


def test_http_raw_response_shape_base64(server, hf_manager):
    body = _post(server, {"model": "hf", "input": ["one", "two"], "encoding_format": "base64"}).json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["data"][1]["object"] == "embedding" and body["data"][1]["index"] == 1
    vec = np.frombuffer(base64.b64decode(body["data"][1]["embedding"]), dtype="<f4")
    assert np.abs(vec - hf_manager.encode("hf", ["two"])[0]).max() <= 1e-5


def test_http_float_response_is_exactly_the_float32_values(server, hf_manager):
    # Written by orjson, not json.dumps: the same document (key order, float64 of each float32
    # value, so a client's float32 round trip is exact), whatever the digits' spelling.
    raw = _post(server, {"model": "hf", "input": ["one", "two"], "encoding_format": "float"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    body = json.loads(raw.content)
    assert list(body) == ["object", "data", "model", "usage"]
    assert list(body["data"][0]) == ["object", "embedding", "index"]
    assert [d["embedding"] for d in body["data"]] == hf_manager.encode("hf", ["one", "two"]).tolist()


def test_http_dimensions_shorten_and_renormalize(client, hf_manager):
    response = client.embeddings.create(model="hf", input=["shorter vectors"], dimensions=64)
    vec = np.array(response.data[0].embedding)
    assert vec.shape == (64,) and abs(np.linalg.norm(vec) - 1) < 1e-5
    full = hf_manager.encode("hf", ["shorter vectors"])[0][:64]
    assert np.abs(vec - full / np.linalg.norm(full)).max() <= 1e-5
    with pytest.raises(openai.BadRequestError, match="larger than the 384"):
        client.embeddings.create(model="hf", input="x", dimensions=1000)


def test_http_models_list_and_retrieve(client, server):
    models = list(client.models.list())
    assert [m.id for m in models] == ["hf-minilm"]
    assert models[0].object == "model" and models[0].owned_by and models[0].created > 0
    card = httpx.get(f"http://{server.address}/v1/models/hf").json()  # alias -> the canonical card
    assert card["id"] == "hf-minilm" and card["dims"] == 384 and "hf" in card["aliases"]
    assert client.models.retrieve("hf-minilm").id == "hf-minilm"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_http_errors_are_typed_and_the_server_keeps_serving(client, server, sentences):
    with pytest.raises(openai.NotFoundError, match="served models: hf-minilm"):
        client.embeddings.create(model="gpt-nope", input="x")
    with pytest.raises(openai.BadRequestError, match="send the input as a string"):
        client.embeddings.create(model="hf", input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError, match="empty string"):
        client.embeddings.create(model="hf", input=["ok", ""])
    with pytest.raises(openai.BadRequestError, match="empty list"):
        client.embeddings.create(model="hf", input=[])
    with pytest.raises(openai.APIStatusError) as too_many:
        client.embeddings.create(model="hf", input=["x"] * 17)
    assert too_many.value.status_code == 413 and "at most 16" in too_many.value.message
    # errors keep OpenAI's shape
    bad_json = httpx.post(f"http://{server.address}/v1/embeddings", content=b"{nope", timeout=10,
                          headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.json() == {"error": {"message": "The request body is not valid JSON.",
                                         "type": "invalid_request_error", "param": None, "code": "invalid_json"}}
    missing = _post(server, {"input": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    mixed = _post(server, {"model": "hf", "input": ["a", 3]})
    assert mixed.status_code == 400 and "list of strings" in mixed.json()["error"]["message"]
    big = _post(server, {"model": "hf", "input": "x" * 70_000})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    # ... and after all of that, it still answers
    assert len(client.embeddings.create(model="hf", input=sentences[:2]).data) == 2


def test_http_chunked_body_over_the_limit_is_413(server):
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "hf", "input": "'
        for _ in range(20):
            yield b"y" * 4096
        yield b'"}'

    response = httpx.post(f"http://{server.address}/v1/embeddings", content=chunks(), timeout=10,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_http_health_docs_and_no_cors_by_default(server):
    base = f"http://{server.address}"
    assert httpx.get(f"{base}/health").json() == {"status": "serving"}
    assert httpx.get(f"{base}/docs").status_code == 200
    assert "/v1/embeddings" in httpx.get(f"{base}/openapi.json").json()["paths"]
    preflight = httpx.options(f"{base}/v1/embeddings", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_http_health_is_503_until_serving(hf_manager):
    with serve_in_thread(hf_manager) as srv:
        srv.set_serving(False)
        assert httpx.get(f"http://{srv.address}/health").status_code == 503
        srv.set_serving(True)
        assert httpx.get(f"http://{srv.address}/health").status_code == 200


def test_http_api_keys_and_cors_when_configured(hf_manager):
    config = ServerConfig(api_keys=(SecretStr("k-right"),), cors_origins=("https://app.example",))
    with serve_in_thread(hf_manager, config=config) as srv:
        base = f"http://{srv.address}/v1"
        for key in ("k-wrong", ""):
            bad = openai.OpenAI(base_url=base, api_key=key or "x", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                bad.embeddings.create(model="hf", input="x")
        assert httpx.post(f"{base}/embeddings", json={"model": "hf", "input": "x"}).status_code == 401
        assert httpx.get(f"{base}/models").status_code == 401
        good = openai.OpenAI(base_url=base, api_key="k-right", max_retries=0)
        assert len(good.embeddings.create(model="hf", input="x").data) == 1
        assert httpx.get(f"http://{srv.address}/health").status_code == 200  # probes need no key
        preflight = httpx.options(f"{base}/embeddings", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"


def test_http_429_when_busy_and_500_without_internals():
    gate = SlowGenerator(delay_s=10)  # holds a call until released, or fails, on demand: the 429 and 500 paths
    manager = EmbeddingGeneratorManager()
    manager.register_generator("gate", gate)
    with serve_in_thread(manager, config=ServerConfig(max_concurrency=1)) as srv:
        client = openai.OpenAI(base_url=f"http://{srv.address}/v1", api_key="x", max_retries=0)
        first: list[object] = []
        worker = threading.Thread(target=lambda: first.append(client.embeddings.create(model="gate", input="a")))
        worker.start()
        assert gate.started.wait(10)
        with pytest.raises(openai.RateLimitError) as busy:
            client.embeddings.create(model="gate", input="b")
        assert not gate.finished.is_set() and not first  # fails fast, does not queue: the first call is still held
        assert busy.value.response.headers["retry-after"] == "1"
        gate.release.set()
        worker.join(10)
        assert len(first) == 1
        gate.fail = BackendUnavailableError("upstream 10.0.0.7 said: secret-internal-detail")
        with pytest.raises(openai.InternalServerError) as failed:
            client.embeddings.create(model="gate", input="c")
        assert "secret-internal-detail" not in str(failed.value.body) and "gate" in failed.value.message
        gate.fail = RuntimeError("traceback-ish internals")
        with pytest.raises(openai.InternalServerError) as crashed:
            client.embeddings.create(model="gate", input="c")
        assert "internals" not in str(crashed.value.body)
        gate.fail = None
        assert client.embeddings.create(model="gate", input="d").data[0].embedding == [1.0, 2.0]


def test_http_serve_cli_subprocess_sigterm_exit_0(default_spec: Path, hf_manager, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "AGENT_EMBEDDINGS_LOAD_PLUGINS": "", "TEST_SERVE_KEY": "k-cli-secret"}
    served = ServeProcess(default_spec, http="127.0.0.1:0", args=["--api-key-ref", "env:TEST_SERVE_KEY"], env=env)
    with served:
        client = openai.OpenAI(base_url=f"http://{served.addresses['http']}/v1", api_key="k-cli-secret", max_retries=0)
        got = np.array(client.embeddings.create(model="hf", input=["from a subprocess"]).data[0].embedding)
        assert np.abs(got - hf_manager.encode("hf", ["from a subprocess"])[0]).max() <= 1e-5
        assert served.terminate() == 0, served.output
    assert "k-cli-secret" not in served.output
    # the engine the default spec's backend auto picked on this host, and its streams, named at start-up
    described = hf_manager.get("hf").describe()
    streams = f", {described['streams']} streams" if described["streams"] > 1 else ""
    assert f"serving http on {served.addresses['http']}: hf-minilm (hf, {described['backend']}{streams})" in served.output


def test_http_listening_socket_disables_nagle():
    """Keep-alive answers must not wait for the client's delayed ACK (40 ms on Linux)."""
    import socket

    from agent_embeddings.server.http import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()


# -- issue 19 ----------------------------------------------------------------------------------
def test_finding_10_env_keys_are_stripped_and_a_non_ascii_token_is_a_401(light_spec):
    """``AGENT_EMBEDDINGS_API_KEYS="k1, k2"`` through ``serve``: both keys work on both servers; a
    bearer token that is not ASCII is a 401 (once a 500: ``hmac.compare_digest`` TypeError) on the
    fast path and on ``/v1/models``."""
    import grpc

    from agent_embeddings.protocol.convert import pb
    from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2_grpc as pb_grpc

    env = {"HF_HUB_OFFLINE": "1", "AGENT_EMBEDDINGS_LOAD_PLUGINS": "", "AGENT_EMBEDDINGS_API_KEYS": "k1, k2 ,"}
    with ServeProcess(light_spec(), http="127.0.0.1:0", grpc="127.0.0.1:0", env=env) as served:
        base = f"http://{served.addresses['http']}/v1"
        for key in ("k1", "k2"):
            assert httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200, key
        assert httpx.get(f"{base}/models", headers={"Authorization": "Bearer k3"}).status_code == 401
        with grpc.insecure_channel(served.addresses["grpc"]) as channel:
            info = pb_grpc.EmbeddingServiceStub(channel).Info(
                pb.InfoRequest(), metadata=(("authorization", "Bearer k2"),), timeout=10
            )
        assert [m.name for m in info.models] == ["remote"]
        token = "Bearer ключ-k2".encode()  # a header carries bytes; Starlette reads them as latin-1
        models = httpx.get(f"{base}/models", headers={"Authorization": token})
        fast = httpx.post(f"{base}/embeddings", headers={"Authorization": token}, json={"model": "remote", "input": "x"})
        for answer in (models, fast):
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key", answer.text
        assert served.terminate() == 0, served.output
    assert "Traceback" not in served.output and "TypeError" not in served.output
    # the Python API strips too, and compares bytes
    config = ServerConfig(api_keys=(SecretStr(" k2\t"),))
    assert config.accepts_key("k2") and not config.accepts_key("ключ") and not config.accepts_key(" k2\t")
    from agent_embeddings.errors import ConfigurationError

    for bad in (" ", "k\n2", "ключ"):  # a key no client can send: refused, without showing it
        with pytest.raises(ConfigurationError, match=r"api_keys\[1\]") as excinfo:
            ServerConfig(api_keys=(SecretStr("k1"), SecretStr(bad)))
        assert bad.strip() not in str(excinfo.value) or not bad.strip()


ACCESS_LINE = r"http (GET|POST) (/v1/embeddings|/v1/models|/health|/metrics|other) \d{3} texts=(\d+|-) \d+\.\dms( error=\w+)?"


def test_finding_16_every_error_answer_is_counted_once_by_cause_and_logged(hf_manager, caplog):
    """Seven 4xx answers of different kinds (once: requests_total 7, request_errors_total 1, no log
    line): each counts as an error with its cause, and every request has one access-log line with
    no key and no text in it."""
    import re

    from ._grpc_support import wait_for

    key = "k-finding-16-secret"
    config = ServerConfig(api_keys=(SecretStr(key),), max_inputs=2, max_request_bytes=4096)
    auth = {"Authorization": f"Bearer {key}"}
    with caplog.at_level(logging.INFO, logger="agent_embeddings.access"), serve_in_thread(hf_manager, config=config) as srv:
        base = f"http://{srv.address}"
        answers = [
            httpx.post(f"{base}/v1/embeddings", json={"model": "hf", "input": "no key"}),  # 401
            httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer wrong"}),  # 401
            httpx.post(f"{base}/v1/embeddings", content=b"{not json", headers={**auth, "Content-Type": "application/json"}),
            httpx.post(f"{base}/v1/embeddings", json={"model": "nope", "input": "x"}, headers=auth),  # 404
            httpx.post(f"{base}/v1/embeddings", json={"model": "hf", "input": ["a", "b", "c"]}, headers=auth),  # 413
            httpx.post(f"{base}/v1/embeddings", json={"model": "hf", "input": "y" * 5000}, headers=auth),  # 413 body
            httpx.get(f"{base}/no/such/route"),  # 404
            httpx.post(f"{base}/v1/embeddings", json={"model": "hf", "input": ["secret text one", "two"]}, headers=auth),
        ]
        assert [a.status_code for a in answers] == [401, 401, 400, 404, 413, 413, 404, 200]
        scraped: list[str] = []

        def all_counted() -> bool:  # a request is counted just after its answer is sent
            scraped.append(httpx.get(f"{base}/metrics").text)
            found = samples(scraped[-1], "agent_embeddings_requests_total", server="http")
            return sum(v for k, v in found.items() if dict(k)["route"] != "/metrics") >= 8

        wait_for(all_counted)
        metrics = scraped[-1]
    errors = by("type", samples(metrics, "agent_embeddings_request_errors_total", server="http"))
    answered = by("status", samples(metrics, "agent_embeddings_requests_total", server="http"))
    assert sum(v for status, v in answered.items() if int(status) >= 400) == 7 == sum(errors.values())
    assert errors == {
        "invalid_api_key": 2, "invalid_json": 1, "model_not_found": 1, "too_many_inputs": 1,
        "request_too_large": 1, "invalid_request_error": 1,  # no such route: OpenAI's type for it
    }
    lines = access_lines(caplog.records)[:8]
    assert all(re.fullmatch(ACCESS_LINE, line) for line in lines), lines
    assert lines[0].startswith("http POST /v1/embeddings 401 texts=- ") and lines[0].endswith(" error=invalid_api_key")
    assert lines[4].startswith("http POST /v1/embeddings 413 texts=3 ") and lines[4].endswith(" error=too_many_inputs")
    assert lines[6].startswith("http GET other 404 ") and lines[7].startswith("http POST /v1/embeddings 200 texts=2 ")
    assert key not in caplog.text and "secret text" not in caplog.text and "wrong" not in caplog.text


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_finding_17_tls_files_that_cannot_serve_are_named_with_their_problem(hf_manager, default_spec, tmp_path,
                                                                                capsys):
    """The issue: a missing file gave `unexpected FileNotFoundError` without the path, a garbage PEM
    `unexpected SSLError`. Each is now a one-line error naming the file and what is wrong with it."""
    from agent_embeddings.cli import main

    cert, key = _certificate(tmp_path, "server")
    _, other_key = _certificate(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    missing = tmp_path / "missing.pem"
    cases = [
        (["--tls-cert", str(missing), "--tls-key", str(key)], [str(missing), "No such file"]),
        (["--tls-cert", str(cert), "--tls-key", str(tmp_path)], [str(tmp_path), "Is a directory"]),
        (["--tls-cert", str(garbage), "--tls-key", str(key)], [str(garbage), "holds no PEM certificate"]),
        (["--tls-cert", str(cert), "--tls-key", str(garbage)], [str(garbage), "holds no PEM private key"]),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], [str(other_key), "not the key of the certificate"]),
        (["--tls-cert", str(cert)], [str(cert), "holds no private key"]),
        (["--tls-key", str(key)], ["needs a certificate"]),
        (["--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(garbage)],
         [str(garbage), "--tls-client-ca"]),
    ]
    for args, expected in cases:
        code = main(["serve", "--spec", str(default_spec), "--http", "127.0.0.1:0", *args])
        err = capsys.readouterr().err.strip()
        assert code == 1 and "unexpected" not in err and err.count("\n") == 0, err
        assert all(part in err for part in expected), (expected, err)
    with serve_in_thread(hf_manager, config=ServerConfig(tls_cert=cert, tls_key=key)) as srv:  # a good pair serves
        trusted = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"https://{srv.address}/health", verify=trusted).json() == {"status": "serving"}
