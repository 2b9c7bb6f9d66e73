"""The contract every backend gets from AbstractEmbeddingGenerator: batching, dims,
normalization, validation, async — exercised with small real generators (tests/fakes.py)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from agent_embeddings import (
    AbstractEmbeddingGenerator,
    DimensionMismatchError,
    EmbeddingContractError,
    EmbeddingGeneratorManager,
    InvalidInputError,
)
from agent_embeddings.vectors import from_float32_bytes, l2_normalize, to_float32_bytes

from .fakes import Broken, CharStats


def test_single_and_batch_agree_and_keep_order():
    gen = CharStats(normalize=False)
    texts = ["aaa", "bb", "c", "abcabc"]
    batch = gen.generate_batch(texts)
    assert [gen.generate(t) for t in texts] == batch
    assert batch[0][ord("a") % 8] == 3.0 and batch[2][ord("c") % 8] == 1.0


def test_batches_are_split_into_batch_size_chunks():
    gen = CharStats(batch_size=3)
    gen.generate_batch([f"t{i}" for i in range(8)])
    assert [len(c) for c in gen.calls] == [3, 3, 2]
    assert gen.calls[0][0] == "t0" and gen.calls[2][-1] == "t7"
    assert gen.usage.calls == 1 and gen.usage.texts == 8 and gen.usage.prompt_tokens == 8


def test_empty_batch_makes_no_backend_call():
    gen = CharStats()
    assert gen.generate_batch([]) == []
    assert gen.encode([]).shape == (0, 0)
    assert gen.calls == []


def test_normalization_is_unit_length_and_zero_stays_zero():
    gen = Broken(lambda texts: [[3.0, 4.0], [0.0, 0.0]][: len(texts)], normalize=True)
    out = gen.encode(["x", "y"])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    assert not np.isnan(out).any()


def test_normalize_override_per_call():
    gen = CharStats(normalize=True)
    raw = gen.encode(["aab"], normalize=False)
    assert raw[0].sum() == 3.0
    assert math.isclose(float(np.linalg.norm(gen.encode(["aab"])[0])), 1.0, rel_tol=1e-6)


def test_dimensions_truncate_then_renormalize():
    gen = CharStats(dimensions=4, normalize=True)
    full = CharStats(normalize=False).encode(["abcdefgh hello"])[0]
    out = gen.encode(["abcdefgh hello"])[0]
    assert out.shape == (4,)
    np.testing.assert_allclose(out, full[:4] / np.linalg.norm(full[:4]), rtol=1e-6)
    assert gen.output_dims == 4


def test_dimensions_larger_than_the_model_is_an_error():
    with pytest.raises(DimensionMismatchError, match=r"dimensions=16 requested but the model delivers 8-dimensional"):
        CharStats(dimensions=16).encode(["x"])


def test_declared_dims_mismatch_names_both_numbers():
    with pytest.raises(DimensionMismatchError, match=r"declared dims=768 but the backend delivered 8-dimensional"):
        CharStats(dims=768).generate("hello")


def test_nan_is_rejected():
    gen = Broken(lambda texts: [[1.0, float("nan")] for _ in texts])
    with pytest.raises(EmbeddingContractError, match=r"vector 0 contains NaN or infinity"):
        gen.generate("x")


def test_wrong_vector_count_is_rejected():
    gen = Broken(lambda texts: [[1.0, 2.0]])
    with pytest.raises(EmbeddingContractError, match=r"shape \(1, 2\) for 3 input\(s\)"):
        gen.generate_batch(["a", "b", "c"])


def test_ragged_vectors_are_rejected():
    gen = Broken(lambda texts: [[1.0, 2.0], [1.0]])
    with pytest.raises(EmbeddingContractError, match=r"unequal lengths \[1, 2\]"):
        gen.generate_batch(["a", "b"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: g.generate(None), "text must be a string, got NoneType"),
        (lambda g: g.generate(42), "text must be a string, got int"),
        (lambda g: g.generate(["a"]), "use generate_batch() for several texts"),
        (lambda g: g.generate(""), "text is an empty string"),
        (lambda g: g.generate_batch("abc"), "got a single string; use generate() for one text"),
        (lambda g: g.generate_batch(["ok", 3]), "texts[1] must be a string, got int"),
        (lambda g: g.generate_batch(["ok", ""]), "texts[1] is an empty string"),
        (lambda g: g.generate_batch(None), "texts must be a list of strings, got NoneType"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    gen = CharStats()
    with pytest.raises(InvalidInputError) as info:
        call(gen)
    assert message in str(info.value)
    assert gen.calls == []  # nothing reached the backend


def test_a_class_without_any_embedding_method_fails_at_construction():
    class Nothing(AbstractEmbeddingGenerator):
        pass

    with pytest.raises(TypeError, match=r"Nothing must implement _embed_batch"):
        Nothing()


async def test_async_twins_match_sync():
    gen = CharStats(normalize=True)
    texts = ["alpha", "beta", "gamma"]
    assert await gen.agenerate_batch(texts) == gen.generate_batch(texts)
    assert await gen.agenerate("alpha") == gen.generate("alpha")
    many = await asyncio.gather(*(gen.agenerate(t) for t in texts))
    assert many == gen.generate_batch(texts)


class DocStyle(AbstractEmbeddingGenerator):
    """Written like the client documentation: generate/generate_batch, super().__init__()."""

    def __init__(self, dims=4, normalize=False, bad=None):
        super().__init__()
        self.dims = dims
        self.normalize = normalize
        self.bad = bad

    def generate(self, text):
        return self.generate_batch([text])[0]

    def generate_batch(self, texts):
        if self.bad == "length":
            return [[1.0] * (self.dims + 1) for _ in texts]
        if self.bad == "nan":
            return [[float("nan")] * self.dims for _ in texts]
        return [[float(len(t)), 1.0, 0.0, 2.0][: self.dims] for t in texts]


def test_documentation_style_subclass_through_the_manager():
    manager = EmbeddingGeneratorManager()
    manager.register_generator("custom", DocStyle(dims=4, normalize=True))
    vec = manager.generate("custom", "abc")
    np.testing.assert_allclose(vec, np.array([3, 1, 0, 2]) / math.sqrt(14), rtol=1e-6)
    assert manager.generate_batch("custom", ["a", "abcd"])[1] == pytest.approx(
        (np.array([4, 1, 0, 2]) / math.sqrt(21)).tolist(), rel=1e-6
    )
    assert manager.generate("custom", "abc", normalize=False) == [3.0, 1.0, 0.0, 2.0]


def test_documentation_style_subclass_wrong_length_is_caught():
    manager = EmbeddingGeneratorManager()
    manager.register_generator("custom", DocStyle(dims=4, bad="length"))
    with pytest.raises(DimensionMismatchError, match=r"declared dims=4 but the backend delivered 5-dimensional"):
        manager.generate("custom", "abc")


def test_documentation_style_subclass_nan_is_caught():
    manager = EmbeddingGeneratorManager()
    manager.register_generator("custom", DocStyle(bad="nan"))
    with pytest.raises(EmbeddingContractError, match=r"custom generator 'custom': vector 0 contains NaN"):
        manager.generate_batch("custom", ["a"])


def test_wire_format_round_trip():
    matrix = l2_normalize(np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32))
    data = to_float32_bytes(matrix)
    assert len(data) == 5 * 7 * 4
    np.testing.assert_array_equal(from_float32_bytes(data, 5, 7), matrix)
    with pytest.raises(EmbeddingContractError, match=r"received 140 bytes for a 5x8 float32 matrix"):
        from_float32_bytes(data, 5, 8)


def test_repr_shows_description():
    gen = CharStats(dims=8)
    assert repr(gen) == (
        f"CharStats(provider='test', model='char-stats', dims=8, normalize=False, space_id={gen.space().space_id!r})"
    )
