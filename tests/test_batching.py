"""Dynamic micro-batching: coalescing, order, error routing, threads and asyncio."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from agent_embeddings import EmbeddingGeneratorManager, InvalidInputError, SpecError, build_embeddings_from_model_item
from agent_embeddings.batching import FillPolicy, MicroBatching

from .fakes import Lengths, SlowLengths


def expected(text: str) -> list[float]:
    """The row ``SlowLengths`` embeds ``text`` as."""
    return [float(len(text)), float(sum(map(ord, text)) % 997), 1.0]


def test_concurrent_threads_share_batches_and_get_their_own_rows():
    gen = SlowLengths(micro_batching=MicroBatching(max_batch_size=64, max_wait_ms=5))
    texts = [f"text {'a' * i}" for i in range(32)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(gen.generate, texts))
    assert results == [expected(t) for t in texts]
    assert gen.batcher.requests == 32
    assert len(gen.calls) < 32 / 2, f"expected coalescing, got {len(gen.calls)} backend calls"
    assert max(len(c) for c in gen.calls) > 1


def test_batch_size_is_bounded():
    gen = SlowLengths(micro_batching=MicroBatching(max_batch_size=4, max_wait_ms=20))
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(gen.generate, [f"t{i}" for i in range(24)]))
    assert max(len(c) for c in gen.calls) <= 4


def test_an_error_reaches_only_its_caller():
    gen = SlowLengths(micro_batching=MicroBatching(max_batch_size=64, max_wait_ms=20))
    texts = ["fine", "also fine", "boom", "still fine"] * 4

    def call(text):
        try:
            return gen.generate(text)
        except RuntimeError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, texts))
    for text, result in zip(texts, results):
        assert result == ("backend refused 'boom'" if text == "boom" else expected(text))


def test_a_lone_caller_is_not_batched():
    gen = SlowLengths(micro_batching=MicroBatching(max_batch_size=64, max_wait_ms=1000))
    for i in range(3):
        assert gen.generate(f"x{i}") == expected(f"x{i}")
    assert gen.calls == [["x0"], ["x1"], ["x2"]]
    assert gen.batcher.policy.in_flight == 1  # what the next batch waits for: no one else


# The waiting policy on a made-up clock: FillPolicy takes every time from its caller, so these
# tests drive it with the times a worker would see, and nothing in them depends on the machine.

def simulate(config: MicroBatching, arrivals: list[float], backend_s: float, think_s: float | None = None,
             rounds: int = 1) -> tuple[FillPolicy, list[int]]:
    """The worker's loop on a made-up clock (:func:`benchmarks.fill_sim.run_worker`): calls arrive at
    ``arrivals``; each backend call takes ``backend_s``; with ``think_s`` each caller comes back that
    long after its answer, ``rounds`` times in all (a closed loop). Returns the policy and the calls
    per batch."""
    from benchmarks.fill_sim import run_worker

    policy, sizes, _ = run_worker(config, arrivals, lambda calls: backend_s, think_s, rounds)
    return policy, sizes


def test_a_lone_caller_never_waits():
    for config in (MicroBatching(max_wait_ms=1000), MicroBatching(max_wait_ms=1000, fill=False)):
        policy = FillPolicy(config)
        for round_ in range(3):
            now = round_ * 0.05
            window = policy.open(now)
            assert window.wait_s(1, now) == 0.0  # not the 1 s window
            policy.close(window, 1, 1, now)
            policy.ended(1, 0, now + 0.03)


def test_batches_fill_to_the_callers_in_flight():
    # With `fill`, the worker waits for as many calls as were in the system when the last batch
    # ended (here all 8), closing as soon as they are in: between the first call (nothing expected
    # yet; its caller stays one round ahead) and the last, every backend call holds all 8 callers,
    # although each comes back 10 ms after its answer.
    callers = [k * 1e-4 for k in range(8)]  # a barrier releases them a little apart
    policy, sizes = simulate(MicroBatching(max_batch_size=64, max_wait_ms=500, max_fill_ms=500), callers,
                             backend_s=0.03, think_s=0.01, rounds=6)
    assert sum(sizes) == 8 * 6
    assert sizes[1:-1] == [8] * (len(sizes) - 2), sizes
    assert policy.filling  # still waiting: the returns came in bursts
    window = policy.open(10.0)
    assert (window.expected, window.wait_s(1, 10.0), window.wait_s(8, 10.0)) == (policy.in_flight, 0.5, 0.0)
    assert window.wait_s(1, 10.4) == pytest.approx(0.1)  # at most max_fill_ms in all
    # The plain window (1 ms) closes before they come back: the callers split into smaller batches.
    plain, window_sizes = simulate(MicroBatching(max_batch_size=64, max_wait_ms=1, fill=False), callers,
                                   backend_s=0.03, think_s=0.01, rounds=6)
    assert sum(window_sizes) == 8 * 6 and len(window_sizes) > len(sizes), (window_sizes, sizes)
    assert not plain.filling


def test_open_loop_arrivals_stop_the_waiting():
    # Calls that arrive on a clock, whatever the answers do (independent clients of a server):
    # waiting for the answered ones to come back would only idle the model, and the policy sees
    # that the arrivals after a batch are no burst. A closed loop keeps it waiting (test above).
    config = MicroBatching(max_batch_size=64, max_wait_ms=500, max_fill_ms=500)
    assert FillPolicy(config).filling  # until shown otherwise
    policy, sizes = simulate(config, [0.0] + [1.0 + 0.012 * i for i in range(40)], backend_s=0.03)
    assert sum(sizes) == 41
    assert not policy.filling


def test_large_batches_bypass_the_queue():
    gen = SlowLengths(micro_batching=MicroBatching(max_batch_size=4), batch_size=100)
    gen.generate_batch([f"t{i}" for i in range(10)])
    assert gen.batcher is None and [len(c) for c in gen.calls] == [10]


async def test_asyncio_callers_are_coalesced():
    gen = SlowLengths(micro_batching=MicroBatching(max_batch_size=64, max_wait_ms=5))
    texts = [f"task {'a' * i}" for i in range(16)]
    results = await asyncio.gather(*(gen.agenerate(t) for t in texts))
    assert results == [expected(t) for t in texts]
    assert len(gen.calls) < 16


def test_input_errors_are_raised_before_queuing():
    gen = SlowLengths(micro_batching=True)
    with pytest.raises(InvalidInputError):
        gen.generate("")
    assert gen.calls == [] and gen.batcher is None


def test_close_stops_the_worker():
    gen = SlowLengths(micro_batching=True)
    gen.generate("a")
    (worker,) = gen.batcher._threads
    gen.close()
    assert not worker.is_alive()


def test_spec_configuration():
    item = {"llm_type": "embeddings", "llm_block_id": "hf:sentence-transformers/all-MiniLM-L6-v2"}
    assert build_embeddings_from_model_item(item).micro_batching == MicroBatching()  # on for local models
    off = build_embeddings_from_model_item({**item, "llm_parameters": {"micro_batching": {"enabled": False}}})
    assert off.micro_batching.enabled is False
    tuned = build_embeddings_from_model_item(
        {**item, "llm_parameters": {"micro_batching": {"max_batch_size": 16, "max_wait_ms": 1}}}
    )
    assert (tuned.micro_batching.max_batch_size, tuned.micro_batching.max_wait_ms) == (16, 1)
    with pytest.raises(SpecError, match=r"llm_parameters.micro_batching.max_wait: unknown field"):
        build_embeddings_from_model_item({**item, "llm_parameters": {"micro_batching": {"max_wait": 1}}})


def test_hf_threads_match_one_at_a_time(hf_manager, sentences):
    gen = hf_manager.get("hf")
    assert gen.micro_batching is not None and gen.micro_batching.enabled
    alone = [gen.generate(t) for t in sentences]
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(gen.generate, sentences * 4))
    np.testing.assert_allclose(np.array(together), np.array(alone * 4), atol=1e-5)
    result = gen.embed(["Hello world"])
    assert result.prompt_tokens == 4  # [CLS] hello world [SEP], counted per caller


def test_the_size_of_every_micro_batch_is_recorded_and_exported():
    """What the micro-batcher made of concurrent calls is visible in stats() and in Prometheus."""
    from agent_embeddings.server.metrics import ServerMetrics

    gen = SlowLengths(micro_batching={"max_batch_size": 64, "max_wait_ms": 5})
    manager = EmbeddingGeneratorManager()
    manager.register_generator("slow", gen)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: manager.generate("slow", f"text {i}"), range(32)))
    stats = manager.stats()["slow"]
    texts, callers = stats["micro_batch_texts"], stats["micro_batch_callers"]
    assert texts["count"] == callers["count"] == gen.batcher.batches  # one observation per backend call
    assert texts["sum"] == callers["sum"] == 32  # one text per caller here
    assert gen.batcher.batches < 32  # concurrent callers were coalesced
    exported = ServerMetrics(manager).render().decode()
    assert 'agent_embeddings_generator_micro_batch_texts_count{generator="slow"} ' + f"{texts['count']}.0" in exported


def test_a_token_budget_groups_mixed_lengths_and_keeps_each_caller_s_rows():
    """Short and long texts taken together go to the backend in calls of similar lengths, within the budget."""
    budget = MicroBatching(max_batch_size=64, max_wait_ms=20, max_batch_tokens=400)
    gen = SlowLengths(micro_batching=budget)
    texts = [("q" * 40 if i % 4 else "p" * 800) + f" {i}" for i in range(32)]  # ~12 vs ~202 estimated tokens
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(gen.generate, texts))
    assert results == [expected(t) for t in texts]
    mixed_calls = [c for c in gen.calls if len({len(t) > 100 for t in c}) > 1]
    assert not mixed_calls, f"a backend call mixed short and long texts: {[len(t) for t in mixed_calls[0]]}"
    for call in gen.calls:
        assert len(call) * (max(len(t) for t in call) // 4 + 2) <= 400 or len(call) == 1
    # and without a budget, the same traffic mixes them (what the budget is for)
    plain = SlowLengths(micro_batching=MicroBatching(max_batch_size=64, max_wait_ms=20, max_batch_tokens=None))
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(plain.generate, texts))
    assert any(len({len(t) > 100 for t in c}) > 1 for c in plain.calls)


def test_a_token_budget_gives_the_model_s_own_vectors(hf_manager, st_model):
    from agent_embeddings import HuggingFaceEmbeddingGenerator

    gen = HuggingFaceEmbeddingGenerator(
        model_name=hf_manager.get("hf").model, normalize=True,
        micro_batching={"max_batch_size": 64, "max_wait_ms": 20, "max_batch_tokens": 512},
    )
    texts = [f"query {i}" if i % 3 else " ".join(["a longer passage about embeddings"] * 20) + f" {i}" for i in range(24)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        vectors = np.array(list(pool.map(gen.generate, texts)))
    reference = st_model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(vectors - reference).max() <= 1e-5
    assert gen.batcher.batches < len(texts)  # they were coalesced, then grouped
    gen.close()


def test_a_cancelled_caller_leaves_the_micro_batch():
    """A caller who leaves while queued (an HTTP client hanging up) takes its texts out of the next batch:
    asyncio.wrap_future cancels the pending future, and the worker skips it (set_running_or_notify_cancel)."""
    gen = Lengths(delay_s=0.5, micro_batching=MicroBatching(max_batch_size=64, max_wait_ms=5))

    async def main() -> None:
        first = asyncio.create_task(gen.aembed(["first"]))
        while not gen.calls:  # the worker is in the backend with "first" for 0.5 s
            await asyncio.sleep(0.005)
        gone = asyncio.create_task(gen.aembed(["gone"]))
        kept = asyncio.create_task(gen.aembed(["kept"]))
        await asyncio.sleep(0.05)  # both queued behind "first"
        gone.cancel()
        assert (await kept).vectors.tolist() == [expected("kept")]
        await first
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(main())
    assert gen.calls == [["first"], ["kept"]]


def test_under_open_load_the_fill_policy_waits_little_more_than_no_wait():
    """Poisson arrivals (benchmarks.fill_sim, the real FillPolicy on a simulated clock): calls that
    ignore the answers must not be waited for like returning callers; the plain window does."""
    from benchmarks import fill_sim

    def service(texts: int) -> float:  # ONNX Runtime fp32 on 2 AVX2 cores: 2 ms + 3 ms per sentence
        return 0.002 + 0.003 * texts

    for rate in (120, 200):
        default, window, eager = (fill_sim.simulate(rate, service, config) for config in fill_sim.POLICIES.values())
        assert default.p99_ms < window.p99_ms, (rate, default, window)
        assert default.p99_ms <= 1.35 * eager.p99_ms, (rate, default, eager)
    lone = fill_sim.simulate(10, service, fill_sim.POLICIES["default (fill)"], n=2000)
    assert lone.mean_batch < 1.1 and lone.p50_ms < 5.5  # a lone caller never waits: one pass, 5 ms


class SideBySide(SlowLengths):
    """``SlowLengths`` whose backend runs ``streams`` calls at once; records the most that ran together."""

    def __init__(self, streams: int, **kw) -> None:
        super().__init__(**kw)
        self.streams, self.running, self.most = streams, 0, 0

    def concurrent_calls(self) -> int:
        return self.streams

    def _embed_batch(self, texts):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super()._embed_batch(texts)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("streams", [1, 2])
def test_a_worker_per_stream_keeps_that_many_batches_in_flight(streams):
    """While one batch runs, the next worker gathers and starts the next: as many at once as the
    backend runs side by side (one worker: never two)."""
    gen = SideBySide(streams, micro_batching=MicroBatching(max_batch_size=4, max_wait_ms=5))
    texts = [f"text {i} {'b' * i}" for i in range(48)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(gen.generate, texts))
    assert results == [expected(t) for t in texts]
    assert gen.batcher.workers == streams and gen.most == streams
    assert gen.batcher.requests == 48 and max(gen.batches) <= 4
    workers = list(gen.batcher._threads)
    gen.close()
    assert len(workers) == streams and not any(w.is_alive() for w in workers)


def test_close_with_two_workers_finishes_every_queued_call():
    from agent_embeddings.batching import MicroBatcher

    calls: list[int] = []

    def slow(texts):
        time.sleep(0.02)
        calls.append(len(texts))
        return np.ones((len(texts), 2), np.float32)

    batcher = MicroBatcher(slow, MicroBatching(max_batch_size=2, max_wait_ms=0), workers=2)
    futures = [batcher.submit([f"t{i}"]) for i in range(12)]
    batcher.close()
    assert all(f.done() and np.asarray(getattr(f.result(), "vectors", f.result())).shape == (1, 2) for f in futures)
    assert sum(calls) == 12 and not any(t.is_alive() for t in batcher._threads)
    assert batcher.submit(["late"]).exception() is not None  # closed: fails at once
