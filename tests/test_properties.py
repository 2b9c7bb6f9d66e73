"""Property-based tests (hypothesis): normalization, truncation, batch splitting, spec parsing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agent_embeddings import DimensionMismatchError, SpecError, build_embeddings_from_model_item
from agent_embeddings.vectors import l2_normalize, truncate

from .fakes import Lengths

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
matrices = arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 16)), elements=finite)


@given(matrices)
@example(np.array([[3.4683343e-23]], dtype=np.float32))  # its square underflows float32: norm 0.93 once
def test_normalized_rows_are_unit_or_zero_never_nan(m):
    out = l2_normalize(m)
    assert np.isfinite(out).all()
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    for row, norm in zip(m, norms):
        if np.abs(row).max() > 1e-6:
            assert norm == pytest.approx(1.0, abs=1e-4)
        else:  # (near-)zero rows stay zero or become unit vectors, never NaN
            assert norm == 0 or norm == pytest.approx(1.0, abs=1e-4)


@given(matrices, st.integers(1, 16))
def test_truncation_keeps_the_prefix(m, k):
    if k > m.shape[1]:
        with pytest.raises(DimensionMismatchError):
            truncate(m, k, who="t")
        return
    assert np.array_equal(truncate(m, k, who="t"), m[:, :k])


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40), st.integers(1, 50))
def test_batch_splitting_keeps_order_and_respects_batch_size(texts, batch_size):
    gen = Lengths(batch_size=batch_size)
    whole = gen.encode(texts)
    assert max(gen.batches) <= batch_size and sum(gen.batches) == len(texts)
    singles = np.vstack([Lengths().encode([t]) for t in texts])
    assert np.array_equal(whole, singles)


_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=False), st.text(max_size=5),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
_keys = st.sampled_from(["normalize", "dims", "dimensions", "batch_size", "retry", "cache", "fallback", "model_id",
                         "allow_incompatible_fallback", "micro_batching", "bogus"])


@settings(max_examples=150)
@given(st.dictionaries(_keys, _values, max_size=4))
def test_spec_parsing_only_ever_raises_spec_errors(params):
    item = {"llm_type": "embeddings", "llm_block_id": "hf:some/model", "llm_parameters": params}
    try:
        gen = build_embeddings_from_model_item(item)
    except SpecError:
        return
    assert gen.model == "some/model"


@given(st.integers(1, 10), st.floats(0, 5), st.floats(0, 5), st.floats(0.1, 100))
def test_retry_policies_parse_or_fail_as_spec_errors(attempts, initial, maximum, deadline):
    item = {"llm_type": "embeddings", "llm_block_id": "hf:some/model", "llm_parameters": {
        "retry": {"attempts": attempts, "initial_backoff_s": initial, "max_backoff_s": maximum, "deadline_s": deadline}}}
    try:
        gen = build_embeddings_from_model_item(item)
    except SpecError as exc:
        assert maximum < initial and "max_backoff_s" in str(exc)
        return
    assert gen.retry.attempts == attempts and all(0 <= gen.retry.backoff(i) <= maximum for i in range(1, 5))
