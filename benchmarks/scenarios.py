"""The scenarios. Each returns Rows comparing a candidate with a baseline measured in the same run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import adapters, bulk, floor, idle, precision
from .data import short_sentences
from .harness import Row, compare, compare_many
from .specs import DEFAULT_SPEC, SHIPPED_SPEC, spec_on
from .traffic import closed_loop, open_loop, poster

ROOT = Path(__file__).resolve().parent.parent


def _manager():
    from agent_embeddings import EmbeddingGeneratorManager

    manager = EmbeddingGeneratorManager.from_subject_spec(DEFAULT_SPEC)
    manager.warm_up()
    return manager


def core(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """Manager + hf generator vs sentence-transformers' own encode, same model and batch size."""
    manager = _manager()
    gen = manager.get("hf")
    gen.batch_size = batch
    st = gen._model().model
    texts = short_sentences(n)
    st.encode(texts[:batch], batch_size=batch)  # warm both paths
    manager.encode("hf", texts[:batch])

    def baseline() -> object:
        return st.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

    for variant, fn in (
        ("manager.generate_batch (lists)", lambda: manager.generate_batch("hf", texts)),
        ("manager.encode (numpy)", lambda: manager.encode("hf", texts)),
    ):
        cand_s, base_s, spread = compare(fn, baseline, repeat)
        yield Row("1 core", variant, "texts/s", n / cand_s, "st.encode", n / base_s, target=0.97, spread=spread)


def _baseline(manager, texts: list[str], batch: int) -> Callable[[], object]:
    """Scenario 1's baseline: sentence-transformers' encode on the same model and batch size."""
    st = manager.get("hf")._model().model
    return lambda: st.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)


def threads(n: int, batch: int, repeat: int, clients: int = 16) -> Iterator[Row]:
    """16 threads calling generate() with one sentence, with and without micro-batching."""
    from agent_embeddings import HuggingFaceEmbeddingGenerator

    manager = _manager()
    texts = short_sentences(n)
    baseline = _baseline(manager, texts, batch)
    model = manager.get("hf").model
    batched = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, micro_batching={"max_batch_size": 64})
    plain = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, micro_batching=False)
    for variant, gen in (("with micro-batching", batched), ("without micro-batching", plain)):
        gen.generate(texts[0])
        cand_s, base_s, spread = compare(closed_loop(gen.generate, texts, clients), baseline, repeat)
        target = 0.85 if gen is batched else None
        yield Row("2 threads", f"{clients} threads x 1 sentence, {variant}", "texts/s", n / cand_s,
                  "st.encode batch", n / base_s, target=target, note=micro_batch_summary(gen), spread=spread)


def mixed(n: int, batch: int, repeat: int, clients: int = 16) -> Iterator[Row]:
    """16 threads x one text of mixed length (short queries, 200-token passages): token-budget
    batching (texts grouped by length) vs count-only micro-batching, and vs st.encode."""
    from agent_embeddings import HuggingFaceEmbeddingGenerator

    from .data import mixed_texts

    manager = _manager()
    texts = mixed_texts(n)
    baseline = _baseline(manager, texts, batch)
    model = manager.get("hf").model
    counted = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch,
                                            micro_batching={"max_batch_size": 64, "max_batch_tokens": None})
    budget = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch,
                                           micro_batching={"max_batch_size": 64, "max_batch_tokens": 16384})
    for gen in (counted, budget):
        gen.generate(texts[0])
    best, spread = compare_many({
        "budget": closed_loop(budget.generate, texts, clients),
        "counted": closed_loop(counted.generate, texts, clients),
        "st": baseline,
    }, repeat)
    yield Row("2b mixed", f"{clients} threads x 1 mixed-length text, token budget 16384 (default)", "texts/s",
              n / best["budget"], "count-only micro-batching", n / best["counted"], target=1.3, spread=spread,
              note=micro_batch_summary(budget))
    yield Row("2b mixed", f"{clients} threads x 1 mixed-length text, token budget 16384 (default)", "texts/s",
              n / best["budget"], "st.encode batch", n / best["st"], target=0.8, spread=spread)
    for gen in (counted, budget):
        gen.close()


def fill(n: int, batch: int, repeat: int, clients: int = 16) -> Iterator[Row]:
    """The batch-filling policy (the default) vs the plain 2 ms window (the default before): closed-loop
    threads, a lone caller's latency, and open-loop Poisson arrivals at 50% and 80% of capacity."""
    from agent_embeddings import HuggingFaceEmbeddingGenerator

    manager = _manager()
    texts = short_sentences(n)
    model = manager.get("hf").model
    filled = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, micro_batching={"max_batch_size": 64})
    window = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch,
                                           micro_batching={"max_batch_size": 64, "fill": False, "max_wait_ms": 2})
    gens = {"fill": filled, "window": window}
    for gen in gens.values():
        gen.generate(texts[0])
    marks = {k: _hist(g) for k, g in gens.items()}
    best, spread = compare_many({
        "fill": closed_loop(filled.generate, texts, clients),
        "window": closed_loop(window.generate, texts, clients),
        "st": _baseline(manager, texts, batch),
    }, repeat)
    shown = {k: _mean_batch(g, marks[k]) for k, g in gens.items()}
    yield Row("2c fill", f"{clients} threads x 1 sentence, batches filled to the callers (default)", "texts/s",
              n / best["fill"], "plain 2 ms window", n / best["window"], spread=spread,
              note=f"mean texts per micro-batch: fill {shown['fill']}, window {shown['window']}")
    yield Row("2c fill", f"{clients} threads x 1 sentence, batches filled to the callers (default)", "texts/s",
              n / best["fill"], "st.encode batch", n / best["st"], target=0.85, spread=spread)

    probe = texts[: min(200, n)]
    p50: dict[str, float] = {}
    for i in range(repeat):  # interleaved, as every other row: drift hits both sides alike
        for k in (("fill", "window") if i % 2 == 0 else ("window", "fill")):
            p50[k] = min(p50.get(k, float("inf")), _p50_ms(gens[k].generate, probe))
    yield Row("2c fill", "lone caller, p50 latency", "ms", p50["fill"], "plain 2 ms window", p50["window"],
              higher_is_better=False, note=f"p50 {p50['fill']:.2f} ms vs {p50['window']:.2f} ms "
              f"({p50['fill'] - p50['window']:+.2f} ms; the issue allows +1 ms)")

    capacity = n / best["window"]
    arrivals = texts[: min(n, 1000)]
    for load in (0.5, 0.8):
        runs: dict[str, list] = {k: [] for k in gens}
        marks = {k: _hist(g) for k, g in gens.items()}
        for i in range(repeat):
            for k in (("fill", "window") if i % 2 == 0 else ("window", "fill")):
                runs[k].append(open_loop(gens[k].generate, arrivals, rate=load * capacity, seed=i))
        p99 = {k: min(r.percentile(99) for r in rs) for k, rs in runs.items()}
        p50 = {k: min(r.percentile(50) for r in rs) for k, rs in runs.items()}
        rate = {k: max(r.throughput for r in rs) for k, rs in runs.items()}
        shown = {k: _mean_batch(g, marks[k]) for k, g in gens.items()}
        yield Row("2c fill", f"open loop, Poisson arrivals at {load:.0%} of capacity, p99 latency", "ms", p99["fill"],
                  "plain 2 ms window", p99["window"], higher_is_better=False,
                  extra={"offered_load": load, "p50_ms": p50["fill"], "p99_ms": p99["fill"],
                         "baseline_p50_ms": p50["window"], "baseline_p99_ms": p99["window"]},
                  note=f"{load:.0%} of {capacity:.0f} texts/s: p50 {p50['fill']:.1f} vs {p50['window']:.1f} ms, "
                       f"p99 {p99['fill']:.1f} vs {p99['window']:.1f} ms, served {rate['fill']:.0f} vs "
                       f"{rate['window']:.0f} texts/s, mean texts per micro-batch {shown['fill']} vs {shown['window']}")
    for gen in gens.values():
        gen.close()


def _hist(gen: object) -> tuple[int, float]:
    hist = gen.stats.snapshot()["micro_batch_texts"]  # type: ignore[attr-defined]
    return hist["count"], hist["sum"]


def _mean_batch(gen: object, since: tuple[int, float]) -> str:
    count, total = _hist(gen)
    count, total = count - since[0], total - since[1]
    return f"{total / count:.1f}" if count else "-"


def micro_batch_summary(gen: object) -> str:
    """Texts per coalesced backend call, from the generator's own statistics (issue 14: make it visible)."""
    hist = gen.stats.snapshot()["micro_batch_texts"]  # type: ignore[attr-defined]
    if not hist["count"]:
        return ""
    previous, counts = 0, []
    for bound, cumulative in hist["buckets"]:
        if cumulative > previous:
            counts.append(f"<={bound:g}: {cumulative - previous}")
        previous = cumulative
    return f"micro-batches: {hist['count']}, mean {hist['sum'] / hist['count']:.1f} texts ({', '.join(counts)})"


@contextmanager
def _server(kind: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """`agent-embeddings serve` in its own process (as deployed), ``env`` added to its environment;
    yields its bound address and its process id."""
    from agent_embeddings.server.process import ServeProcess

    with ServeProcess(DEFAULT_SPEC, env=env, **{kind: "127.0.0.1:0"}) as served:
        yield served.addresses[kind], served.pid


def _p50_ms(call: Callable[[str], object], texts: list[str]) -> float:
    samples = []
    for text in texts:
        start = time.perf_counter()
        call(text)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _cpu_with(pid: int) -> Callable[[Callable[[], object]], float]:
    """A ``compare`` measure: the CPU seconds a run costs this process and the process ``pid`` together."""
    from .modeltime import process_cpu_s

    def measure(fn: Callable[[], object]) -> float:
        server, mine = process_cpu_s(pid), time.process_time()
        fn()
        return time.process_time() - mine + process_cpu_s(pid) - server

    return measure


def _server_rows(
    scenario: str, n: int, batch: int, repeat: int, single, batched, targets, server_pid: int
) -> Iterator[Row]:
    manager = _manager()
    texts = short_sentences(n)
    baseline = _baseline(manager, texts, batch)
    single(texts[0])

    def in_batches(fn: Callable[[list[str]], object]) -> Callable[[], object]:
        return lambda: [fn(texts[i : i + batch]) for i in range(0, n, batch)]

    runs = (
        ("16 clients x 1 sentence", closed_loop(single, texts, 16), baseline, "st.encode batch", targets[0]),
        (f"1 client, batches of {batch}", in_batches(batched), baseline, "st.encode batch", targets[1]),
        (f"1 client, batches of {batch}", in_batches(batched), in_batches(lambda b: manager.encode("hf", b)),
         f"in-process manager.encode, batches of {batch}", targets[2]),
    )
    for variant, fn, base_fn, base_name, target in runs:
        cand_s, base_s, spread = compare(fn, base_fn, repeat)
        yield Row(scenario, variant, "texts/s", n / cand_s, base_name, n / base_s, target=target, spread=spread)
    # The batches' row in CPU as well: wall time on a shared 2-core VM moves 15-30% between rounds
    # (hypervisor steal), the CPU a round costs less. Both sides read this process (the client's
    # decoding; the in-process encode) and the server's (idle, ~1 ms/s, during the in-process runs).
    cand_s, base_s, spread = compare(runs[2][1], runs[2][2], repeat, measure=_cpu_with(server_pid))
    yield Row(scenario, f"1 client, batches of {batch}: CPU per text, the server's and the client's", "ms CPU/text",
              cand_s / n * 1000, f"in-process manager.encode, batches of {batch}", base_s / n * 1000,
              target=targets[2], higher_is_better=False, spread=spread)
    probe = texts[: min(200, n)]
    remote_ms = _p50_ms(single, probe)
    local_ms = _p50_ms(lambda t: manager.generate("hf", t), probe)
    yield Row(scenario, "p50 latency, 1 sentence", "ms", remote_ms, "in-process generate", local_ms,
              higher_is_better=False, note=f"p50 {remote_ms:.2f} ms vs {local_ms:.2f} ms in-process "
              f"({remote_ms - local_ms:+.2f} ms over the wire)")


def http(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """The OpenAI-compatible HTTP server (base64 vectors over keep-alive connections)."""
    with _server("http") as (address, pid):
        post = poster(f"http://{address}", "hf")
        yield from _server_rows("3 http", n, batch, repeat, post, post, (0.7, None, 0.95), pid)


def grpc(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """The AIOS gRPC server, through the aios: client backend."""
    from agent_embeddings import AIOSEmbeddings

    with _server("grpc") as (address, pid):
        with AIOSEmbeddings(grpc_url=address, batch_size=batch) as client:
            yield from _server_rows("4 grpc", n, batch, repeat, client.generate, client.encode, (0.8, 0.95, 0.95), pid)


def startup(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """Wall time of `import agent_embeddings` and `agent-embeddings validate`, vs a bare interpreter."""

    def run(args: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run([sys.executable, *args], check=True, capture_output=True)

    bare = run(["-c", "pass"])
    for variant, fn in (
        ("import agent_embeddings", run(["-c", "import agent_embeddings"])),
        ("validate specs/default.json", run(["-m", "agent_embeddings", "validate", str(SHIPPED_SPEC)])),
    ):
        cand_s, base_s, spread = compare(fn, bare, max(repeat, 5))
        yield Row("7 startup", variant, "s", cand_s, "python -c pass", base_s, higher_is_better=False, spread=spread,
                  note=f"{variant}: {cand_s * 1000:.0f} ms wall (bare interpreter {base_s * 1000:.0f} ms)")
    yield from _first_vector(repeat)


def _first_vector(repeat: int) -> Iterator[Row]:
    """``agent-embeddings embed`` of one sentence from a fresh process (what a CLI call, a new
    worker or a cold start pays): the default spec with ``backend: onnx`` from a cached export
    (ONNX Runtime and tokenizers, no torch) vs the default spec on torch."""
    from agent_embeddings._deps import ONNX_MODULES, installed

    if not installed(*ONNX_MODULES):
        return

    def embed(spec: Path) -> Callable[[], object]:
        command = [sys.executable, "-m", "agent_embeddings", "embed", "--spec", str(spec), "--format", "summary", "hi"]
        return lambda: subprocess.run(command, check=True, capture_output=True)

    onnx_spec = spec_on("onnx")
    embed(onnx_spec)()  # exports into the ONNX cache once (AGENT_EMBEDDINGS_CACHE_DIR), untimed
    cand_s, base_s, spread = compare(embed(onnx_spec), embed(spec_on("torch")), repeat)
    yield Row("7 startup", "first vector from a fresh process: embed CLI, hf backend=onnx (cached export)", "s", cand_s,
              "the same on backend=torch", base_s, higher_is_better=False, spread=spread,
              note=f"{cand_s:.2f} s vs {base_s:.2f} s wall: a cached export needs onnxruntime and tokenizers, "
                   "not torch, transformers and sentence-transformers")


def onnx(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """int8 ONNX Runtime vs fp32 torch, both through the hf generator's encode, with the accuracy beside it.

    The export lands in the ONNX cache (AGENT_EMBEDDINGS_CACHE_DIR) on the first run, untimed.
    """
    import numpy as np

    from agent_embeddings import HuggingFaceEmbeddingGenerator

    model = "sentence-transformers/all-MiniLM-L6-v2"
    torch_gen = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, micro_batching=False)
    int8 = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, backend="onnx-int8")
    fp32 = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, backend="onnx", micro_batching=False)
    from .accuracy import cosines, retrieval_agreement

    texts = short_sentences(n)
    reference = torch_gen.encode(texts)  # also warms the torch side
    cos = cosines(reference, int8.encode(texts))
    fp32_diff = float(np.abs(fp32.encode(texts) - reference).max())
    streams = _streams_of(int8)
    # Retrieval: queries against a corpus of other sentences, the same top hits under int8 as fp32?
    corpus, queries = short_sentences(n, seed=11), short_sentences(max(1, n // 10), seed=7)
    agree = retrieval_agreement(torch_gen.encode(corpus), int8.encode(corpus), torch_gen.encode(queries),
                                int8.encode(queries), corpus_texts=corpus)

    def baseline() -> object:
        return torch_gen.encode(texts)

    cand_s, base_s, spread = compare(lambda: int8.encode(texts), baseline, repeat)
    yield Row("5 onnx int8", "hf backend=onnx-int8 encode", "texts/s", n / cand_s, "hf backend=torch (fp32)",
              n / base_s, target=3.0, spread=spread,
              extra={"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "top1_same": agree["top1"],
                     "top10_overlap": agree["overlap"]},
              note=f"int8 vs fp32 torch on these {n} sentences: mean cosine {cos.mean():.4f}, min {cos.min():.4f} "
                   f"(target >= 0.99); retrieval, {len(queries)} queries vs {n} other sentences: top-1 the same "
                   f"{agree['top1']:.3f}, top-10 overlap {agree['overlap']:.3f}; ONNX Runtime: {streams}, "
                   f"batch {batch}")
    cand_s, base_s, spread = compare(lambda: fp32.encode(texts), baseline, repeat)
    yield Row("5 onnx int8", "hf backend=onnx (fp32) encode", "texts/s", n / cand_s, "hf backend=torch (fp32)",
              n / base_s, spread=spread, note=f"fp32 ONNX vs torch: max abs difference {fp32_diff:.1e}",
              extra={"max_abs_difference": fp32_diff})
    # One sentence per call, as a lone caller or an open-loop server at low load sees it: the forward
    # pass's fixed cost (torch's eager ops, ORT's single graph run) rather than its arithmetic.
    singles = texts[: max(8, min(n, 40))]
    cand_s, base_s, spread = compare(lambda: [fp32.encode([t]) for t in singles],
                                     lambda: [torch_gen.encode([t]) for t in singles], max(repeat, 3))
    yield Row("5 onnx int8", "hf backend=onnx (fp32), 1 sentence per call", "texts/s", len(singles) / cand_s,
              "hf backend=torch (fp32), 1 sentence per call", len(singles) / base_s, spread=spread,
              note=f"{len(singles)} calls of one sentence each, micro-batching off (a lone caller): "
                   f"{cand_s / len(singles) * 1000:.1f} ms vs {base_s / len(singles) * 1000:.1f} ms per call")
    yield from _streams(texts, batch, repeat)
    for gen in (torch_gen, int8, fp32):
        gen.close()


def _streams_of(gen: object) -> str:
    """An ONNX generator's passes: "2 streams of 1 thread"."""
    loaded = gen._model()  # type: ignore[attr-defined]
    streams, threads = loaded.streams, loaded.model.threads
    return f"{streams} stream{'s' * (streams > 1)} of {threads} thread{'s' * (threads > 1)}"


def _streams(texts: list[str], batch: int, repeat: int, clients: int = 16) -> Iterator[Row]:
    """ONNX Runtime fp32 on its default streams (auto) against one stream, whose pass takes all the
    cores: a batch call, and 16 threads of one sentence through the micro-batcher."""
    from agent_embeddings import HuggingFaceEmbeddingGenerator

    model = "sentence-transformers/all-MiniLM-L6-v2"
    one = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, backend="onnx", streams=1)
    many = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, backend="onnx")
    label, base_label = (f"hf backend=onnx (fp32), {_streams_of(gen)}" for gen in (many, one))
    cand_s, base_s, spread = compare(lambda: many.encode(texts), lambda: one.encode(texts), repeat)
    yield Row("5 onnx int8", f"{label}: encode", "texts/s", len(texts) / cand_s, base_label,
              len(texts) / base_s, spread=spread, note=f"batch {batch}: a call's passes side by side")
    cand_s, base_s, spread = compare(closed_loop(many.generate, texts, clients),
                                     closed_loop(one.generate, texts, clients), repeat)
    yield Row("5 onnx int8", f"{label}: {clients} threads x 1 sentence", "texts/s", len(texts) / cand_s,
              base_label, len(texts) / base_s, spread=spread,
              note=f"micro-batched: {micro_batch_summary(many)} (vs {micro_batch_summary(one)})")
    for gen in (one, many):
        gen.close()


def cache(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """A repeated batch of ``batch`` texts (64 by default) with the memory cache on vs off, one run."""
    from agent_embeddings import HuggingFaceEmbeddingGenerator
    from agent_embeddings.cache import MemoryCache

    model = "sentence-transformers/all-MiniLM-L6-v2"
    plain = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, micro_batching=False)
    cached = HuggingFaceEmbeddingGenerator(model_name=model, batch_size=batch, micro_batching=False)
    cached.cache = MemoryCache(10_000)
    texts = short_sentences(batch, seed=64)
    first = cached.encode(texts)  # fills the cache (and loads the model, shared by both)
    same = float(abs(plain.encode(texts) - first).max())
    cand_s, base_s, spread = compare(lambda: cached.encode(texts), lambda: plain.encode(texts), max(repeat, 5))
    yield Row("6 cache", f"repeated batch of {batch}, memory cache on", "batches/s", 1 / cand_s,
              "cache off", 1 / base_s, target=100, spread=spread,
              note=f"{cand_s * 1e3:.2f} ms vs {base_s * 1e3:.1f} ms per batch; max difference to uncached {same:.1e}")
    for gen in (plain, cached):
        gen.close()


ALL: dict[str, Callable[..., Iterator[Row]]] = {
    "core": core,
    "threads": threads,
    "mixed": mixed,
    "fill": fill,
    "http": http,
    "grpc": grpc,
    "startup": startup,
    "cache": cache,
    "onnx": onnx,
    "bulk": bulk.bulk,
    "memory": bulk.memory,
    "sync": bulk.sync,
    "search": bulk.search,
    "ray": bulk.ray,
    "cluster": bulk.cluster,
    "adapters": adapters.adapters,
    "idle": idle.idle,
    "openloop": idle.openloop,
    "precision": precision.precision,
    "floor": floor.floor,
}


def _peer(n: int, batch: int, repeat: int) -> Iterator[Row]:
    from .peers import peer  # peers imports this module

    yield from peer(n=n, batch=batch, repeat=repeat)


ALL["peer"] = _peer
#: Scenarios left out of the smoke test: peer yields nothing unless set up first (`make peer` creates
#: .venv-peer); cluster starts a real two-node Ray cluster (tests/test_bulk_cluster.py runs one already);
#: openloop and floor need wrk and the native gRPC generator (benchmarks/setup_loadgen.sh) and run for minutes.
OPTIONAL = {"peer", "cluster", "openloop", "floor"}

