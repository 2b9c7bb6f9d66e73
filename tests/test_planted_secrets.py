"""Planted secrets (issue 19, "What to show"): eight secrets go through validate, embed, serve
(HTTP and gRPC, the upstream failing), bulk (its manifest) and every logger at DEBUG, and none
of them appears in any output.

The eight: a key with a line break, a password in ``base_url``'s user info, a token in its query
string, two ``default_headers`` values, a key pasted into ``api_key_ref``, a ``file:`` key and an
``env:`` key. Every command is the real CLI in a subprocess whose root logger is at DEBUG (and
``OPENAI_LOG=debug``, ``GRPC_VERBOSITY=debug``); servers are real. The upstream is a loopback
fault server in the worst case: it answers 401 and 500 alternately, echoing the request line and
every request header in its error body and in a response header. For the bulk run it forwards
to our real HTTP server instead, so that a manifest gets written.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from agent_embeddings.bulk import MANIFEST
from agent_embeddings.server.http import serve_in_thread
from agent_embeddings.server.process import ServeProcess

NEWLINE_KEY = "nl-key-first-line-P1a2n3\nnl-key-SECOND-line-t4e5d6"
USER, PASSWORD = "planted-user-U7s8e9", "planted-pass-W0r1d2"
QUERY_TOKEN = "planted-query-T3o4k5"
HEADER_AUTH, HEADER_SESSION = "planted-header-A6u7t8", "planted-session-S9e0s1"
PASTED_KEY = "sk-proj-planted-pasted-K2e3y4"
FILE_KEY = "planted-file-key-F5i6l7"
ENV_KEY = "planted-env-key-E8n9v0"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()  # what httpx sends for the user info
# What must appear nowhere: every secret (each line of the first), and the Basic credential.
NEVER = [*NEWLINE_KEY.splitlines(), NEWLINE_KEY, PASSWORD, QUERY_TOKEN, HEADER_AUTH, HEADER_SESSION,
         PASTED_KEY, PASTED_KEY[8:], FILE_KEY, ENV_KEY, BASIC]

DEBUG_MAIN = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s: %(message)s'); "
    "from agent_embeddings.cli import main; sys.exit(main(sys.argv[1:]))"
)
ENV = {"PLANTED_NEWLINE_KEY": NEWLINE_KEY, "PLANTED_ENV_KEY": ENV_KEY, "OPENAI_LOG": "debug",
       "GRPC_VERBOSITY": "debug", "AGENT_EMBEDDINGS_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1"}


class EchoFront:
    """The upstream: echoes what it was sent in 401/500 answers, or forwards to ``upstream``."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.forward, self.answers = upstream, False, 0
        self.seen: list[str] = []  # what reached it: proof that the secrets did travel
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = f"{self.command} {self.path} headers: {dict(self.headers.items())}"
                outer.seen.append(request)
                if outer.forward:
                    forwarded = urllib.request.Request(f"{outer.upstream}/v1/embeddings", body,
                                                       {"Content-Type": "application/json"})
                    with urllib.request.urlopen(forwarded, timeout=60) as answer:
                        status, payload, echo = answer.status, answer.read(), ""
                else:
                    outer.answers += 1
                    status = 401 if outer.answers % 2 else 500
                    payload = json.dumps({"error": {"message": f"upstream rejected {request}", "type": "x"}}).encode()
                    echo = self.headers.get("Authorization", "")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if echo:
                    self.send_header("X-Echo-Authorization", echo)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def front(hf_manager) -> Iterator[EchoFront]:
    with serve_in_thread(hf_manager) as upstream:
        echo = EchoFront(f"http://{upstream.address}")
        yield echo
        echo.close()


def item(name: str, **params: object) -> dict:
    return {"llm_type": "embeddings", "name": name, "llm_block_id": "openai:hf-minilm",
            "llm_parameters": {"retry": {"attempts": 1}, "timeout": 30.0, **params}}


@pytest.fixture(scope="module")
def specs(front: EchoFront, tmp_path_factory) -> dict[str, Path]:
    """``good``: five secrets that travel (user info and query, two headers, a file: and an env: key);
    ``pasted`` and ``newline``: the two that a spec refuses at load."""
    root = tmp_path_factory.mktemp("planted")
    key_file = root / "key.txt"
    key_file.write_text(FILE_KEY + "\n")
    plain = f"http://{front.address}/v1"
    good = [
        item("creds", base_url=f"http://{USER}:{PASSWORD}@{front.address}/v1?token={QUERY_TOKEN}",
             api_key_required=False, default_headers={"X-Custom-Auth": HEADER_AUTH, "X-Session": HEADER_SESSION}),
        item("filekey", base_url=plain, api_key_ref=f"file:{key_file}"),
        item("envkey", base_url=plain, api_key_ref="env:PLANTED_ENV_KEY"),
    ]
    out = {}
    for name, models in (("good", good), ("pasted", [item("pasted", base_url=plain, api_key_ref=PASTED_KEY)]),
                         ("newline", [item("newline", base_url=plain, api_key_ref="env:PLANTED_NEWLINE_KEY")])):
        out[name] = root / f"{name}.json"
        out[name].write_text(json.dumps({"subject_id": "planted", "models": models}))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(20)))
    out["corpus"] = root / "corpus.jsonl"
    return out


def cli(*args: str) -> subprocess.Popen[str]:
    """The CLI in a subprocess, every logger at DEBUG (started now, awaited by ``outputs``)."""
    return subprocess.Popen([sys.executable, "-c", DEBUG_MAIN, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})


def outputs(*procs: subprocess.Popen[str], timeout: float = 120) -> list[tuple[int | None, str]]:
    """``(exit status, stdout + stderr)`` of each; one still running after ``timeout`` is killed
    and gets None (a ``serve`` that accepted a spec it should have refused)."""
    done: list[tuple[int | None, str]] = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            done.append((None, out + err))
            continue
        done.append((proc.returncode, out + err))
    return done


def debug_server(spec: Path, **kinds: str) -> ServeProcess:
    server = ServeProcess(spec, env=ENV, **kinds)
    server.command[1:3] = ["-c", DEBUG_MAIN]  # python -m agent_embeddings -> the DEBUG entry point
    return server


def assert_nothing_leaked(texts: list[str]) -> None:
    everything = "\n".join(texts)
    for secret in NEVER:
        assert secret not in everything, f"{secret!r} leaked: ...{everything[max(0, everything.find(secret) - 300):][:600]}"


def test_planted_secrets_never_leave_through_validate_embed_bulk_http_serve_or_any_logger(front, specs, tmp_path):
    good, bad = specs["good"], [specs["pasted"], specs["newline"]]
    shown: list[str] = []
    # validate, embed, serve and bulk with the two specs refused at load: one error line each
    runs = outputs(cli("validate", str(good), *map(str, bad)),
                   *[cli("embed", "--spec", str(spec), "hello") for spec in bad],
                   *[cli("serve", "--spec", str(spec), "--http", "127.0.0.1:0") for spec in bad],
                   *[cli("bulk", "--spec", str(spec), "--input", str(specs["corpus"]), "--id-column", "id",
                         "--output", str(tmp_path / f"bad-{spec.stem}")) for spec in bad], timeout=60)
    assert [code for code, _ in runs] == [1] * 7
    assert "ok (3 embedding generator(s)" in runs[0][1] and "api_key_ref" in runs[0][1] and "line break" in runs[0][1]
    shown += [text for _, text in runs]
    # embed through each travelling secret: the upstream answers 401/500 with all of them in its body
    before = len(front.seen)
    runs = outputs(*[cli("embed", "--spec", str(good), "--name", name, "hello") for name in ("creds", "filekey", "envkey")])
    assert [code for code, _ in runs] == [1, 1, 1] and all("HTTP " in text for _, text in runs)
    shown += [text for _, text in runs]
    # bulk: the upstream answers for real; the manifest keeps header names, never values
    front.forward = True
    try:
        (code, text), = outputs(cli("bulk", "--spec", str(good), "--name", "creds", "--input", str(specs["corpus"]),
                                    "--id-column", "id", "--output", str(tmp_path / "vectors")))
    finally:
        front.forward = False
    manifest = (tmp_path / "vectors" / MANIFEST).read_text()
    assert code == 0 and '"X-Custom-Auth": "**********"' in manifest and '"X-Session": "**********"' in manifest
    shown += [text, manifest]
    # serve --http: the backend fails, the caller gets a 500, the server logs at DEBUG
    server = debug_server(good, http="127.0.0.1:0")
    with server:
        base = f"http://{server.addresses['http']}/v1"
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        for name in ("creds", "filekey", "envkey"):
            with pytest.raises(openai.InternalServerError) as failed:
                client.embeddings.create(model=name, input=["hello"])
            shown.append(json.dumps(failed.value.body))
        shown.append(httpx.get(f"{base}/models").text)
        assert server.terminate() == 0
    shown.append(server.output)
    travelled = "\n".join(front.seen[before:])
    for secret in (BASIC, QUERY_TOKEN, HEADER_AUTH, HEADER_SESSION, FILE_KEY, ENV_KEY):
        assert secret in travelled  # each one did reach the upstream, and came back in its answers
    assert "upstream rejected" in server.output and "DEBUG httpcore2" in server.output  # the log saw it all
    assert_nothing_leaked(shown)


def test_planted_secrets_never_reach_grpc_callers_or_the_grpc_server_log(front, specs):
    from agent_embeddings.protocol.convert import pb
    from agent_embeddings.protocol.gen.aios.embeddings.v1.embeddings_pb2_grpc import EmbeddingServiceStub

    server = debug_server(specs["good"], grpc="127.0.0.1:0")
    shown: list[str] = []
    with server:
        with grpc.insecure_channel(server.addresses["grpc"]) as channel:
            stub = EmbeddingServiceStub(channel)
            for name in ("creds", "filekey", "envkey", "creds"):  # 401 and 500 answers for each kind of key
                with pytest.raises(grpc.RpcError) as failed:
                    stub.Embed(pb.EmbedRequest(model=name, inputs=["hello"]), timeout=60)
                shown.append(f"{failed.value.code()} {failed.value.details()} {failed.value.trailing_metadata()}")
            shown.append(str(stub.Info(pb.InfoRequest(), timeout=60)))
        assert server.terminate() == 0
    shown.append(server.output)
    assert "Embed" in server.output
    assert_nothing_leaked(shown)
