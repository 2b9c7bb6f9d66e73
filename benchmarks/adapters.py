"""The framework adapters against the manager they wrap: LlamaIndex's and LangChain's batch calls on
mixed-length texts vs ``manager.encode`` of the same texts (the adapters must not cost speed)."""

from __future__ import annotations

from collections.abc import Iterator

from .data import mixed_texts
from .harness import Row, compare_many


def adapters(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """``n`` mixed-length texts (three short queries, then a 200-token passage, repeated) through
    each adapter's batch method, and through ``manager.encode``: the best of ``repeat`` rotated
    rounds each. LlamaIndex's old default (batches of the generator's 64) is shown for reference."""
    from agent_embeddings.integrations.langchain import AgentEmbeddings
    from agent_embeddings.integrations.llama_index import AgentEmbedding

    from .scenarios import _manager  # scenarios imports this module

    manager = _manager()
    texts = mixed_texts(n)
    llama, chain = AgentEmbedding(manager, "hf"), AgentEmbeddings(manager, "hf")
    cut = AgentEmbedding(manager, "hf", embed_batch_size=manager.get("hf").batch_size)
    manager.encode("hf", texts[:64], input_type="document")  # warm the model and the tokenizer
    fns = {
        "encode": lambda: manager.encode("hf", texts, input_type="document"),
        "llama": lambda: llama.get_text_embedding_batch(texts),
        "chain": lambda: chain.embed_documents(texts),
        "cut": lambda: cut.get_text_embedding_batch(texts),
    }
    best, spread = compare_many(fns, repeat)
    base = n / best["encode"]
    baseline = f"manager.encode, same {n:,} mixed-length texts"
    yield Row("10 adapters", f"LlamaIndex AgentEmbedding.get_text_embedding_batch (embed_batch_size "
              f"{llama.embed_batch_size}, the default)", "texts/s", n / best["llama"], baseline, base, target=0.95,
              spread=spread)
    yield Row("10 adapters", "LangChain AgentEmbeddings.embed_documents", "texts/s", n / best["chain"], baseline,
              base, target=0.95, spread=spread)
    yield Row("10 adapters", f"LlamaIndex with embed_batch_size {cut.embed_batch_size} (the old default)",
              "texts/s", n / best["cut"], baseline, base, spread=spread,
              note="each batch of 64 is padded to its longest text; the manager sorts a whole call by length")
    manager.close()
