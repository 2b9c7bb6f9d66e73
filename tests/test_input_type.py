"""Issue 11: ``input_type`` ("query" / "document") end to end, with the real model and real servers.

The vectors are checked against sentence-transformers' own ``encode(texts, prompt=...)`` on the
same loaded model; the servers are real (HTTP on uvicorn, gRPC) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from agent_embeddings import (
    AIOSEmbeddings,
    ConfigurationError,
    EmbeddingGeneratorManager,
    InvalidInputError,
    SpecError,
)
from agent_embeddings.backends.huggingface import resolve_model_path
from agent_embeddings.protocol.convert import pb
from agent_embeddings.server.http import serve_in_thread

from .fakes import CharStats

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOL = 1e-5
QUERIES = ["how do agents get embeddings", "what carries packed float32 bytes"]
DOCS = ["Agents need embeddings from many backends.", "gRPC carries packed float32 bytes."]


def e5_like(**params: object) -> EmbeddingGeneratorManager:
    item = {"llm_type": "embeddings", "name": "e5", "llm_block_id": f"hf:{MINILM}",
            "llm_parameters": {"query_prompt": "query: ", "document_prompt": "passage: ", **params}}
    return EmbeddingGeneratorManager.from_subject_spec({"subject_id": "t", "models": [item]})


def st_encode(st_model, texts: list[str], prompt: str | None) -> np.ndarray:
    return st_model.encode(texts, prompt=prompt, normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture(scope="module")
def e5(hf_manager) -> EmbeddingGeneratorManager:  # hf_manager: the model is loaded once, shared
    manager = e5_like()
    yield manager
    manager.close()


def test_query_and_document_vectors_equal_sentence_transformers_with_the_prompt(e5, st_model):
    query = e5.encode("e5", QUERIES, input_type="query")
    document = e5.encode("e5", QUERIES, input_type="document")
    plain = e5.encode("e5", QUERIES)
    assert np.abs(query - st_encode(st_model, QUERIES, "query: ")).max() <= TOL
    assert np.abs(document - st_encode(st_model, QUERIES, "passage: ")).max() <= TOL
    assert np.abs(plain - st_encode(st_model, QUERIES, None)).max() <= TOL
    assert np.abs(query - document).max() > 0.01  # the prompts change the vectors
    assert e5.generate("e5", QUERIES[0], input_type="query") == pytest.approx(query[0].tolist(), abs=TOL)
    assert np.abs(np.array(asyncio.run(e5.agenerate_batch("e5", QUERIES, input_type="query"))) - query).max() <= TOL


def test_usage_counts_the_prompt(e5):
    plain = e5.embed("e5", QUERIES[:1]).prompt_tokens
    query = e5.embed("e5", QUERIES[:1], input_type="query").prompt_tokens
    assert plain is not None and query is not None and query > plain  # "query: " is tokens too


def test_an_unknown_input_type_is_a_clear_error(e5):
    with pytest.raises(InvalidInputError, match=r"'question' is not one of 'query', 'document'"):
        e5.encode("e5", QUERIES, input_type="question")  # type: ignore[arg-type]


def test_the_model_s_own_prompts_apply_by_default_and_by_name(tmp_path_factory, st_model):
    # A model whose configuration declares query/document prompts, like e5 or nomic models do.
    source = Path(resolve_model_path(MINILM))
    folder = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(source, folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "search_query: ", "document": "search_document: ", "short": "q: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    item = {"llm_type": "embeddings", "name": "own", "llm_block_id": f"hf:{folder}", "llm_parameters": {}}
    named = {**item, "name": "named", "llm_parameters": {"query_prompt_name": "short"}}
    manager = EmbeddingGeneratorManager.from_subject_spec({"subject_id": "t", "models": [item, named]})
    assert np.abs(manager.encode("own", QUERIES, input_type="query") - st_encode(st_model, QUERIES, "search_query: ")).max() <= TOL
    assert np.abs(manager.encode("own", DOCS, input_type="document") - st_encode(st_model, DOCS, "search_document: ")).max() <= TOL
    assert np.abs(manager.encode("named", QUERIES, input_type="query") - st_encode(st_model, QUERIES, "q: ")).max() <= TOL
    wrong = {**item, "name": "wrong", "llm_parameters": {"query_prompt_name": "nope"}}
    bad = EmbeddingGeneratorManager.from_subject_spec({"subject_id": "t", "models": [wrong]})
    with pytest.raises(ConfigurationError, match=r"no prompt named 'nope'; its prompts: \['document', 'query', 'short'\]"):
        bad.encode("wrong", QUERIES, input_type="query")
    manager.close()
    bad.close()


def test_a_literal_prompt_and_a_prompt_name_for_one_kind_are_a_spec_error():
    with pytest.raises(SpecError, match="query_prompt or query_prompt_name, not both"):
        e5_like(query_prompt_name="query")


def test_generators_written_without_input_type_keep_working():
    manager = EmbeddingGeneratorManager()
    manager.register_generator("chars", CharStats())  # _embed_batch(texts) only
    plain = manager.encode("chars", DOCS)
    assert np.array_equal(manager.encode("chars", DOCS, input_type="query"), plain)  # ignored, not an error


def test_the_cache_keeps_query_and_document_vectors_apart(hf_manager):
    manager = e5_like(cache={"kind": "memory"})
    query = manager.embed("e5", DOCS, input_type="query")
    document = manager.embed("e5", DOCS, input_type="document")
    assert document.cache_hits == 0 and np.abs(query.vectors - document.vectors).max() > 0.01
    again = manager.embed("e5", DOCS, input_type="query")
    assert again.cache_hits == len(DOCS) and np.array_equal(again.vectors, query.vectors)
    assert manager.embed("e5", DOCS).cache_hits == 0  # plain texts are a third kind
    manager.close()


def test_input_type_through_the_http_server(e5):
    with serve_in_thread(e5) as server:
        url = f"http://{server.address}/v1/embeddings"
        answer = httpx.post(url, json={"model": "e5", "input": QUERIES, "input_type": "query"})
        assert answer.status_code == 200
        vectors = np.array([d["embedding"] for d in answer.json()["data"]], dtype=np.float32)
        assert np.abs(vectors - e5.encode("e5", QUERIES, input_type="query")).max() <= TOL
        refused = httpx.post(url, json={"model": "e5", "input": QUERIES, "input_type": "question"})
        assert refused.status_code == 400
        message = refused.json()["error"]["message"]
        assert "input_type" in message and "'query'" in message and "'document'" in message


def test_input_type_through_the_grpc_server_and_an_old_client(e5, runner):
    server = runner.grpc_server(e5)
    try:
        with AIOSEmbeddings(grpc_url=server.address, normalize=True) as client:
            remote = client.encode(DOCS, input_type="document")
        assert np.abs(remote - e5.encode("e5", DOCS, input_type="document")).max() <= TOL
        # An old client's message, built without the field: embedded as plain texts, as before.
        from agent_embeddings.protocol.gen.aios.embeddings.v1.embeddings_pb2_grpc import EmbeddingServiceStub

        old = pb.EmbedRequest(model="e5", inputs=DOCS, normalize=True)
        with grpc.insecure_channel(server.address) as channel:
            reply = EmbeddingServiceStub(channel).Embed(old, timeout=30)
        plain = np.frombuffer(reply.vectors, "<f4").reshape(reply.rows, reply.cols)
        assert np.abs(plain - e5.encode("e5", DOCS)).max() <= TOL
    finally:
        runner.stop(server)


def test_a_new_message_still_parses_where_the_field_is_unknown():
    """An old server: the same message type without field 8, built from the shipped descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    embeddings_pb2.DESCRIPTOR.CopyToProto(proto)
    request = next(m for m in proto.message_type if m.name == "EmbedRequest")
    kept = [f for f in request.field if f.name != "input_type"]
    del request.field[:]
    request.field.extend(kept)
    pool = descriptor_pool.DescriptorPool()  # a pool of its own: the v1 of a server built before the field
    pool.Add(proto)
    Old = message_factory.GetMessageClass(pool.FindMessageTypeByName("aios.embeddings.v1.EmbedRequest"))
    new = pb.EmbedRequest(model="e5", inputs=DOCS, input_type=pb.INPUT_TYPE_QUERY).SerializeToString()
    parsed = Old.FromString(new)
    assert (parsed.model, list(parsed.inputs)) == ("e5", DOCS)
    assert not hasattr(parsed, "input_type")


def test_the_cli_passes_input_type(tmp_path, capsys):
    from agent_embeddings.cli import main

    spec = {"subject_id": "t", "models": [{"llm_type": "embeddings", "name": "e5", "llm_block_id": f"hf:{MINILM}",
                                           "llm_parameters": {"query_prompt": "query: "}}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert main(["embed", "--spec", str(path), "--input-type", "query", QUERIES[0]]) == 0
    from_cli = json.loads(capsys.readouterr().out)["embedding"]
    manager = EmbeddingGeneratorManager.from_subject_spec(spec)
    assert from_cli == pytest.approx(manager.generate("e5", QUERIES[0], input_type="query"), abs=TOL)
    manager.close()


def test_the_async_path_passes_input_type_to_a_backend_without_its_own_async_twin(hf_manager):
    """hf: has only ``_embed_batch(texts, input_type=...)``; the default async twin must forward it.

    A call larger than a micro-batch skips the micro-batcher and reaches ``_aembed_batch`` itself
    (a 100-text gRPC request failed with INTERNAL TypeError before).
    """
    texts = [f"{DOCS[i % 2]} ({i})" for i in range(100)]
    sync = hf_manager.encode("hf-minilm", texts, input_type="document")
    result = asyncio.run(hf_manager.aembed("hf-minilm", texts, input_type="document"))
    assert np.abs(result.vectors - sync).max() <= TOL
