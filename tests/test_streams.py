"""ONNX Runtime's streams: forward passes side by side, each on its share of the cores, fed by a
micro-batcher with a worker per stream. The real model throughout; the vectors are torch's."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from agent_embeddings import SpecError, build_embeddings_from_model_item
from agent_embeddings.backends.huggingface import HuggingFaceEmbeddingGenerator
from agent_embeddings.backends.onnx_encode import auto_streams, cpu_cores

from .conftest import MINILM


@pytest.fixture
def two_streams():
    """An fp32 ONNX generator with two streams (the default ONNX cache, which the session exports)."""
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, backend="onnx", streams=2, batch_size=64)
    yield gen
    gen.close()


def _record_passes(monkeypatch: pytest.MonkeyPatch, gen: HuggingFaceEmbeddingGenerator) -> dict[str, object]:
    """Wrap the loaded encoder's ``encode``: the threads passes ran in and the most that ran at once."""
    loaded = gen._model()
    seen: dict[str, object] = {"threads": set(), "most": 0, "sizes": []}
    running = [0]
    lock = threading.Lock()
    encode = loaded.model.encode

    def recorded(texts, **kwargs):
        with lock:
            running[0] += 1
            seen["most"] = max(seen["most"], running[0])
            seen["threads"].add(threading.current_thread().name)
            seen["sizes"].append(len(texts))
        try:
            return encode(texts, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(loaded.model, "encode", recorded)
    return seen


def test_a_large_call_runs_a_pass_per_stream_side_by_side_with_torch_s_vectors(two_streams, st_model, monkeypatch):
    texts = [f"sentence number {i} about {'retrieval ' * (i % 7)}vectors" for i in range(256)]
    seen = _record_passes(monkeypatch, two_streams)
    vectors = two_streams.encode(texts)
    np.testing.assert_allclose(vectors, st_model.encode(texts, normalize_embeddings=True), atol=1e-5)
    assert seen["sizes"] == [64, 64, 64, 64]  # one backend call of 256, four passes
    assert seen["most"] == 2  # side by side, never more than the streams
    assert all(name.startswith("onnx-stream") for name in seen["threads"])
    loaded = two_streams._model()
    assert loaded.streams == 2 and loaded.model.threads == max(1, cpu_cores() // 2)
    assert two_streams.describe()["streams"] == 2


def test_a_call_too_small_to_share_stays_one_pass(two_streams, monkeypatch):
    """Under 4 texts per stream a split would cost more CPU per text than it saves: one pass, inline."""
    seen = _record_passes(monkeypatch, two_streams)
    two_streams.generate_batch([f"short text {i}" for i in range(7)])
    assert seen["sizes"] == [7] and not any(name.startswith("onnx-stream") for name in seen["threads"])
    two_streams.generate_batch([f"short text {i}" for i in range(8)])
    assert seen["sizes"][1:] == [4, 4]


def test_concurrent_callers_get_their_own_rows_and_usage(two_streams, st_model, sentences, monkeypatch):
    """16 threads of single sentences through two micro-batcher workers and two streams: each caller
    gets its own vector and its own token count (read per thread from the pass that tokenized it)."""
    seen = _record_passes(monkeypatch, two_streams)
    texts = [*sentences, *(f"{s} again" for s in sentences)]
    expected_tokens = [two_streams.count_tokens([t]) for t in texts]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda t: two_streams.embed([t]), texts))
    np.testing.assert_allclose(np.vstack([r.vectors for r in results]),
                               st_model.encode(texts, normalize_embeddings=True), atol=1e-5)
    assert [r.prompt_tokens for r in results] == expected_tokens
    assert two_streams.batcher.workers == 2 and seen["most"] <= 2


def test_streams_name_their_session(two_streams):
    """A session's threads follow its streams: another number of streams is another session."""
    one = HuggingFaceEmbeddingGenerator(model_name=MINILM, backend="onnx", streams=1)
    other = HuggingFaceEmbeddingGenerator(model_name=MINILM, backend="onnx", streams=2)
    try:
        assert one._model() is not two_streams._model() and other._model() is two_streams._model()
        assert one._model().model.threads == cpu_cores() and one._model().pool is None
        assert one.describe()["streams"] == 1
    finally:
        one.close()
        other.close()


def test_auto_takes_two_streams_where_there_are_two_cores():
    assert [auto_streams(n) for n in (1, 2, 16)] == [1, 2, 2]
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, backend="torch")
    assert gen.concurrent_calls() == 1  # torch: one pass at a time, one worker


def test_streams_on_torch_are_refused_naming_the_field():
    item = {"llm_type": "embeddings", "llm_block_id": f"hf:{MINILM}",
            "llm_parameters": {"backend": "torch", "streams": 2}}
    with pytest.raises(SpecError, match=r"llm_parameters.*streams 2 needs an onnx backend"):
        build_embeddings_from_model_item(item)
    with pytest.raises(SpecError, match=r"llm_parameters.streams"):
        build_embeddings_from_model_item({**item, "llm_parameters": {"backend": "onnx", "streams": 0}})


def test_a_cancelled_call_frees_both_streams(two_streams, monkeypatch):
    """A call whose caller left stops between passes on every stream, as on one."""
    import asyncio

    seen = _record_passes(monkeypatch, two_streams)
    texts = [f"a longer sentence {i} " * 8 for i in range(1024)]

    async def main() -> None:
        task = asyncio.create_task(two_streams.aembed(texts))
        while not seen["sizes"]:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(main())
    loaded = two_streams._model()
    for _ in range(2):  # both slots come back
        assert loaded.slots.acquire(timeout=60)
    for _ in range(2):
        loaded.slots.release()
    assert sum(seen["sizes"]) < len(texts) / 2, (seen["sizes"], time.monotonic() - started)
