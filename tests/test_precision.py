"""``precision`` for ``hf:`` (issue 24, item 4): bf16 vectors stay within the bound measured against
fp32, bf16 is an embedding space of its own, and ``auto`` picks bf16 only on a CPU with native bf16.

Real model. bf16 on a CPU without AMX/AVX-512-BF16 is emulated and slow, so the texts are few;
speed is measured by ``python -m benchmarks --only precision``, never here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from agent_embeddings import EmbeddingGeneratorManager, HuggingFaceEmbeddingGenerator
from agent_embeddings.backends.onnx_export import RECIPE_VERSION
from agent_embeddings.backends.precision import (
    BF16_CPU_FLAGS,
    cpu_flags,
    effective_precision,
    resolve_backend,
    resolve_precision,
)
from agent_embeddings.errors import ConfigurationError
from agent_embeddings.space import PROBES, describe_differences

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
#: bf16 against fp32, all-MiniLM-L6-v2: min cosine 0.99991 over 1,000 mixed texts (benchmarks'
#: precision scenario, AVX2 CPU); the bound leaves room for another CPU's bf16 kernels
BF16_MIN_COSINE = 0.9998


@pytest.fixture(scope="module")
def bf16() -> Iterator[HuggingFaceEmbeddingGenerator]:
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, precision="bf16", micro_batching=False, normalize=True)
    yield gen
    gen.close()


def test_bf16_vectors_stay_within_the_measured_bound_of_fp32(
    bf16: HuggingFaceEmbeddingGenerator, hf_manager: EmbeddingGeneratorManager, sentences: list[str]
) -> None:
    texts = [*sentences, *PROBES, "A longer passage: " + " ".join(sentences)]
    reference = hf_manager.encode("hf", texts)
    got = bf16.encode(texts)
    assert got.dtype == np.float32 and got.shape == reference.shape
    cos = (reference * got).sum(axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() >= BF16_MIN_COSINE, cos
    assert cos.min() < 1 - 1e-6  # bf16 really ran: fp32 on any CPU agrees far closer
    assert bf16.describe()["precision"] == "bf16"


def test_bf16_is_a_space_of_its_own(bf16: HuggingFaceEmbeddingGenerator, hf_manager: EmbeddingGeneratorManager) -> None:
    fp32, mine = hf_manager.get("hf").space(), bf16.space()
    assert (fp32.precision, mine.precision) == ("fp32", "bf16")
    assert mine.space_id != fp32.space_id
    assert describe_differences(fp32, mine) == ["the precision changed from 'fp32' to 'bf16'"]


def test_auto_picks_bf16_only_with_native_bf16() -> None:
    assert resolve_precision("auto", "cpu", frozenset({"avx2", "fma", "avx512f", "avx512_vnni"})) == "fp32"
    assert resolve_precision("auto", "cpu", frozenset({"avx512f", "amx_tile", "amx_bf16"})) == "bf16"
    assert resolve_precision("auto", "cpu", frozenset({"avx512f", "avx512_bf16"})) == "bf16"
    assert resolve_precision("auto", "cuda", frozenset({"amx_bf16"})) == "fp32"
    assert resolve_precision("fp32", "cpu", frozenset({"amx_bf16"})) == "fp32"
    assert resolve_precision("bf16", "cpu", frozenset()) == "bf16"


def test_auto_follows_this_cpu_and_shares_fp32s_space_without_native_bf16(
    hf_manager: EmbeddingGeneratorManager, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agent_embeddings.backends.precision as hf

    assert bool(set(BF16_CPU_FLAGS) & cpu_flags()) == (hf.resolve_precision("auto", "cpu") == "bf16")  # this CPU
    # Both kinds of CPU, whichever this one is: the flags are the only input auto reads.
    for flags, expected in ((frozenset({"avx2", "fma"}), "fp32"), (frozenset({"amx_tile", "amx_bf16"}), "bf16")):
        monkeypatch.setattr(hf, "cpu_flags", lambda flags=flags: flags)
        gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, precision="auto", micro_batching=False, normalize=True)
        try:
            assert gen.space().precision == expected
            if expected == "fp32":
                assert gen.space() == hf_manager.get("hf").space()
        finally:
            gen.close()


def test_bf16_needs_the_torch_backend_and_auto_leaves_onnx_its_own_numbers() -> None:
    with pytest.raises(ConfigurationError, match="precision 'bf16' needs backend 'torch'"):
        HuggingFaceEmbeddingGenerator(model_name=MINILM, precision="bf16", backend="onnx-int8")
    amx = frozenset({"amx_bf16"})
    assert effective_precision("torch", "auto", "cpu", amx) == "bf16"
    assert effective_precision("onnx", "auto", "cpu", amx) == "fp32"
    assert effective_precision("onnx-int8", "auto", "cpu", amx) == f"int8-r{RECIPE_VERSION}"


def test_backend_auto_is_onnx_only_for_fp32_on_the_cpu_with_the_extra() -> None:
    avx2, amx = frozenset({"avx2", "fma"}), frozenset({"amx_bf16"})
    assert resolve_backend("auto", "fp32", "cpu", avx2, onnx=True) == "onnx"
    assert resolve_backend("auto", "auto", "cpu", avx2, onnx=True) == "onnx"  # auto precision is fp32 here
    assert resolve_backend("auto", "auto", "cpu", amx, onnx=True) == "torch"  # ... and bf16, torch's, there
    assert resolve_backend("auto", "bf16", "cpu", avx2, onnx=True) == "torch"
    assert resolve_backend("auto", "fp32", "cuda", avx2, onnx=True) == "torch"
    assert resolve_backend("auto", "fp32", "mps", avx2, onnx=True) == "torch"
    assert resolve_backend("auto", "fp32", "cpu", avx2, onnx=False) == "torch"  # without the onnx extra
    for explicit in ("torch", "onnx", "onnx-int8"):
        assert resolve_backend(explicit, "fp32", "cuda", amx, onnx=False) == explicit
    # bf16 with auto is allowed (auto means torch then); with an onnx backend it is refused above
    gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, precision="bf16", backend="auto", device="cpu")
    assert gen._engine() == "torch"
