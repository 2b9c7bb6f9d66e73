"""The framework adapters against the manager they wrap: LlamaIndex's and LangChain's batch calls on
mixed-length texts vs ``manager.encode`` of the same texts (the adapters must not cost speed).

The rows count CPU seconds of the benchmark process (``time.process_time``), not wall seconds:
the sides do the same model work, so what differs is what each costs, and on a shared 2-core
machine wall time mostly measured the neighbours (one run's wall-clock spread was 561%). Each
row's note gives the wall-clock ratio of the same rounds, which also catches an adapter that
waits instead of working (that costs no CPU time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from .data import mixed_texts
from .harness import Row


def _rounds(fns: dict[str, Callable[[], object]], repeat: int) -> tuple[dict[str, float], dict[str, float], float]:
    """Best CPU seconds and best wall seconds of each of ``fns`` over ``repeat`` rotated rounds, and
    the largest CPU-time spread, (slowest - fastest) / fastest."""
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeat):
        for name in names[i % len(names):] + names[: i % len(names)]:
            c, w = time.process_time(), time.perf_counter()
            fns[name]()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    spread = max((max(r) - min(r)) / min(r) for r in cpu.values())
    return {k: min(v) for k, v in cpu.items()}, {k: min(v) for k, v in wall.items()}, spread


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
    cpu, wall, spread = _rounds({
        "encode": lambda: manager.encode("hf", texts, input_type="document"),
        "llama": lambda: llama.get_text_embedding_batch(texts),
        "chain": lambda: chain.embed_documents(texts),
        "cut": lambda: cut.get_text_embedding_batch(texts),
    }, repeat)
    baseline = f"manager.encode, same {n:,} mixed-length texts"

    def row(key: str, variant: str, target: float | None, note: str = "") -> Row:
        wall_ratio = wall["encode"] / wall[key]
        return Row("10 adapters", variant, "texts/CPU-s", n / cpu[key], baseline, n / cpu["encode"], target=target,
                   spread=spread, extra={"wall_ratio": wall_ratio},
                   note=(note + "; " if note else "") + f"wall-clock ratio of the same rounds {wall_ratio:.3f}")

    yield row("llama", f"LlamaIndex AgentEmbedding.get_text_embedding_batch (embed_batch_size {llama.embed_batch_size}, "
              "the default)", 0.95)
    yield row("chain", "LangChain AgentEmbeddings.embed_documents", 0.95)
    yield row("cut", f"LlamaIndex with embed_batch_size {cut.embed_batch_size} (the old default)", None,
              "each batch of 64 is padded to its longest text; the manager sorts a whole call by length")
    manager.close()
