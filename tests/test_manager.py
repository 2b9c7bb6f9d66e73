"""EmbeddingGeneratorManager: registration, names from specs, overrides, concurrency."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from agent_embeddings import EmbeddingGeneratorManager, UnknownGeneratorError

from .fakes import CharStats

HF = "hf:sentence-transformers/all-MiniLM-L6-v2"


def test_register_get_unregister():
    manager = EmbeddingGeneratorManager()
    gen = CharStats()
    manager.register_generator("chars", gen, aliases=["c"])
    assert manager.get("c") is gen and "chars" in manager and "c" in manager and len(manager) == 1
    assert gen.name == "chars"
    with pytest.raises(ValueError, match=r"already registered: chars"):
        manager.register_generator("chars", CharStats())
    manager.register_generator("chars", CharStats(), aliases=["c"], replace=True)
    assert manager.get("c") is not gen and manager.get("chars") is not gen
    removed = manager.unregister("chars")
    assert "chars" not in manager and "c" not in manager and isinstance(removed, CharStats)


def test_unknown_name_lists_known_names():
    manager = EmbeddingGeneratorManager()
    manager.register_generator("openai", CharStats())
    manager.register_generator("hf-minilm", CharStats(), aliases=["hf"])
    with pytest.raises(UnknownGeneratorError) as info:
        manager.generate("cohere", "hello")
    assert str(info.value) == "unknown generator 'cohere'; known generators: hf, hf-minilm, openai"
    with pytest.raises(UnknownGeneratorError, match=r"none registered"):
        EmbeddingGeneratorManager().generate_batch("x", ["a"])


def test_register_rejects_non_generators():
    with pytest.raises(TypeError, match=r"expected an AbstractEmbeddingGenerator, got dict"):
        EmbeddingGeneratorManager().register_generator("x", {})  # type: ignore[arg-type]


def test_normalize_override_and_listing():
    manager = EmbeddingGeneratorManager()
    manager.register_generator("chars", CharStats(normalize=True))
    raw = manager.generate("chars", "aab", normalize=False)
    assert sum(raw) == 3.0
    assert np.linalg.norm(manager.generate("chars", "aab")) == pytest.approx(1.0)
    assert np.linalg.norm(manager.encode("chars", ["aab"], normalize=True)[0]) == pytest.approx(1.0)
    (info,) = manager.list_generators()
    assert (info.name, info.provider, info.model, info.dims, info.normalize) == ("chars", "test", "char-stats", 8, True)


def test_names_from_a_spec(tmp_path: Path):
    spec = {
        "subject_id": "t",
        "models": [
            {"llm_type": "embeddings", "llm_block_id": HF, "name": "minilm"},
            {"llm_type": "embeddings", "llm_block_id": "hf:other/model"},
            {"llm_type": "embeddings", "llm_block_id": "hf:third/model", "llm_parameters": {"normalize": False}},
        ],
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec))
    manager = EmbeddingGeneratorManager.from_subject_spec(path)
    # "hf" is not unique here, so no item gets the prefix as a name
    assert manager.names() == ["minilm", "hf:other/model", "hf:third/model"]
    assert manager.get(HF) is manager.get("minilm")
    assert "hf" not in manager
    rows = {r.name: r for r in manager.list_generators()}
    assert rows["minilm"].aliases == (HF,) and rows["minilm"].block_id == HF
    assert rows["hf:third/model"].normalize is False


def test_prefix_is_a_name_when_unique(hf_manager: EmbeddingGeneratorManager):
    assert hf_manager.get("hf") is hf_manager.get("hf-minilm") is hf_manager.get(HF)


def test_constructing_from_a_spec_loads_no_model(default_spec: Path):
    manager = EmbeddingGeneratorManager.from_subject_spec(default_spec)
    assert manager.get("hf")._loaded is None  # loads on first use or warm_up()


def test_many_threads_get_the_same_vectors_as_one_at_a_time(hf_manager, sentences):
    expected = {t: hf_manager.generate("hf", t) for t in sentences}
    jobs = [sentences[i % len(sentences)] for i in range(48)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda t: (t, hf_manager.generate("hf", t)), jobs))
    for text, vec in results:
        np.testing.assert_allclose(vec, expected[text], atol=1e-5)


async def test_many_tasks_get_the_same_vectors_as_one_at_a_time(hf_manager, sentences):
    expected = hf_manager.encode("hf", sentences)
    results = await asyncio.gather(*(hf_manager.agenerate("hf", t) for t in sentences))
    np.testing.assert_allclose(np.array(results), expected, atol=1e-5)
    batch = await hf_manager.agenerate_batch("hf-minilm", sentences)
    np.testing.assert_allclose(np.array(batch), expected, atol=1e-5)


def test_usage_reports_real_token_counts(hf_manager, st_model):
    result = hf_manager.embed("hf", ["Hello world", "A man is eating food."])
    expected = sum(len(ids) for ids in st_model.tokenizer(["Hello world", "A man is eating food."])["input_ids"])
    assert result.prompt_tokens == expected
    assert result.generator == "hf-minilm"
