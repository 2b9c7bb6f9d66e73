"""One embedding space whatever the transport (issue 20, part 1): an index built with ``hf:`` verifies
against ``openai:`` and ``aios:`` items pointed at our own servers of the same model, and every
change that moves the vectors is refused saying what changed. Real model, real servers on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent_embeddings import EmbeddingGeneratorManager
from agent_embeddings.bulk import embed_dataset
from agent_embeddings.cli import main
from agent_embeddings.errors import EmbeddingSpaceError
from agent_embeddings.protocol.convert import pb
from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2_grpc as pb_grpc
from agent_embeddings.server.http import serve_in_thread
from agent_embeddings.space import SpaceCheck, SpaceIdentity

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["The cat sits outside.", "A man is eating food.", "Agents need vectors.", "Parquet holds the index."]


@pytest.fixture(scope="module")
def index(hf_manager, tmp_path_factory) -> Path:
    """A bulk output built locally with hf: (the batch box)."""
    base = tmp_path_factory.mktemp("index")
    source = base / "corpus.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    embed_dataset(hf_manager, "hf", source, base / "vectors", id_column="id")
    return base / "vectors"


@pytest.fixture(scope="module")
def servers(hf_manager, runner):
    """Our servers of the same spec (the serving fleet): HTTP and gRPC."""
    with serve_in_thread(hf_manager) as http:
        grpc = runner.grpc_server(hf_manager)
        try:
            yield http.address, grpc.address
        finally:
            runner.stop(grpc)


def remote_spec(http: str, grpc: str, **extra: object) -> dict:
    return {"subject_id": "agent", "models": [
        {"llm_type": "embeddings", "name": "via-http", "llm_block_id": "openai:hf-minilm",
         "llm_parameters": {"base_url": f"http://{http}/v1", "api_key_required": False, **extra}},
        {"llm_type": "embeddings", "name": "via-grpc", "llm_block_id": "aios:hf-minilm",
         "llm_parameters": {"grpc_url": grpc, **extra}},
    ]}


def test_the_space_id_is_short_stable_and_travels_with_the_generator(hf_manager):
    space = hf_manager.get("hf").space()
    assert space.model == MINILM and space.precision == "fp32" and space.dims == 384 and space.normalize
    assert space.max_seq_length == 256 and space.query_prompt is None and space.document_prompt is None
    assert space.space_id.startswith("all-minilm-l6-v2-") and len(space.space_id) == len("all-minilm-l6-v2-") + 8
    assert SpaceIdentity.model_validate(space.model_dump()).space_id == space.space_id  # a function of the fields
    assert hf_manager.get("hf").describe()["space_id"] == space.space_id
    assert hf_manager.stats()["hf-minilm"]["space_id"] == space.space_id
    assert hf_manager.info("hf").space == space


def test_both_servers_publish_the_space(hf_manager, servers):
    http, grpc = servers
    expected = hf_manager.get("hf").space()
    card = httpx.get(f"http://{http}/v1/models/hf-minilm", timeout=10).json()
    assert card["space_id"] == expected.space_id and SpaceIdentity.model_validate(card["space"]) == expected
    import grpc as grpc_lib

    with grpc_lib.insecure_channel(grpc) as channel:
        info = pb_grpc.EmbeddingServiceStub(channel).Info(pb.InfoRequest(model="hf-minilm"), timeout=10)
    assert info.models[0].space.id == expected.space_id and info.models[0].space.max_seq_length == 256


def test_an_index_built_locally_verifies_through_both_transports(hf_manager, servers, index, tmp_path, capsys):
    http, grpc = servers
    local = hf_manager.get("hf").space()
    with EmbeddingGeneratorManager.from_subject_spec(remote_spec(http, grpc)) as manager:
        for name in ("via-http", "via-grpc"):
            check = manager.verify_space(name, index)
            assert check.ok and check.min_cosine > 0.99999 and set(check.cosines) == {"none", "query", "document"}
            assert manager.get(name).space() == local  # taken from the endpoint, not the transport
            assert manager.get(name).describe()["space_id"] == local.space_id
        # one space reached two ways shares its cache entries
        for input_type in (None, "query"):
            assert manager.get("via-http").cache_namespace(input_type=input_type) == hf_manager.get(
                "hf").cache_namespace(input_type=input_type)
        vectors = manager.encode("via-http", TEXTS, input_type="document")
        assert np.abs(vectors - hf_manager.encode("hf", TEXTS, input_type="document")).max() <= 1e-6
    spec = tmp_path / "remote.json"
    spec.write_text(json.dumps(remote_spec(http, grpc)))
    for name in ("via-http", "via-grpc"):
        assert main(["bulk", "verify", "--spec", str(spec), "--name", name, "--output", str(index)]) == 0
        assert "same space" in capsys.readouterr().out


CHANGES = {
    "query-prompt": ({"query_prompt": "query: "}, "the query prompt changed from None to 'query: '"),
    "document-prompt": ({"document_prompt": "passage: "}, "the document prompt changed from None to 'passage: '"),
    "normalization": ({"normalize": False}, "normalization changed from True to False"),
    "dimensions": ({"dimensions": 128}, "the output width changed from 384 to 128"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_that_moves_the_vectors_is_refused_saying_what_changed(index, default_spec, change):
    params, reason = CHANGES[change]
    spec = json.loads(default_spec.read_text())
    spec["models"][0]["llm_parameters"].update(params)
    with EmbeddingGeneratorManager.from_subject_spec(spec) as manager:
        with pytest.raises(EmbeddingSpaceError) as caught:
            manager.verify_space("hf", index)
    message = str(caught.value)
    assert reason in message and "a different model" not in message  # the identity says what changed


def test_a_change_of_the_prompt_on_the_remote_side_is_seen_through_the_endpoint(hf_manager, index, default_spec):
    spec = json.loads(default_spec.read_text())
    spec["models"][0]["llm_parameters"]["document_prompt"] = "passage: "
    with EmbeddingGeneratorManager.from_subject_spec(spec) as served, serve_in_thread(served) as http:
        client = {"subject_id": "agent", "models": [{
            "llm_type": "embeddings", "llm_block_id": "openai:hf-minilm",
            "llm_parameters": {"base_url": f"http://{http.address}/v1", "api_key_required": False,
                               "input_type_field": "input_type"}}]}
        with EmbeddingGeneratorManager.from_subject_spec(client) as manager:
            with pytest.raises(EmbeddingSpaceError, match="the document prompt changed from None to 'passage: '"):
                manager.verify_space("openai", index)


def test_a_model_swapped_behind_an_endpoint_that_publishes_nothing_is_caught_by_the_probes(index, default_spec):
    """A peer server (no published space) answering with another model: the name is all that is known,
    and only the probes can tell; the message says so ("a different model")."""
    rng = np.random.default_rng(0)

    class Peer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - an OpenAI-compatible endpoint with another model behind
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": rng.normal(size=384).tolist()}
                    for i in range(len(inputs))]
            payload = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    peer = ThreadingHTTPServer(("127.0.0.1", 0), Peer)  # GET /v1/models/...: 501, it publishes no space
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    try:
        spec = {"subject_id": "agent", "models": [{
            "llm_type": "embeddings", "llm_block_id": "openai:all-minilm",
            "llm_parameters": {"base_url": f"http://127.0.0.1:{peer.server_port}/v1", "api_key_required": False,
                               "model_id": MINILM}}]}
        with EmbeddingGeneratorManager.from_subject_spec(spec) as manager:
            assert manager.get("openai").space().precision is None  # known by name only
            with pytest.raises(EmbeddingSpaceError, match="probe sentences moved .* a different model answers"):
                manager.verify_space("openai", index)
    finally:
        peer.shutdown()
        peer.server_close()


def test_explain_says_a_different_model_only_when_the_identity_is_equal():
    moved = SpaceCheck("m", "g", {"none": 0.5, "query": 0.99999, "document": 0.6}, ())
    assert "a different model answers behind this name" in moved.explain() and "none 0.5" in moved.explain()
    both = SpaceCheck("m", "g", {"none": 0.5}, ("normalization changed from True to False",))
    assert "a different model" not in both.explain() and both.explain().startswith("normalization changed")
    same = SpaceCheck("m", "g", {"none": 1.0, "query": 1.0, "document": 1.0})
    assert same.ok and same.explain().startswith("same space")
