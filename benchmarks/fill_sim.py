"""The micro-batcher under open load, simulated: Poisson arrivals, a forward pass that costs
``fixed + per_text x texts``, and the real :class:`~agent_embeddings.batching.FillPolicy` deciding
when each batch closes (on the simulation's clock, which it takes from its caller).

What it answers: how much latency the waiting policy itself adds at a given load, with no noise,
no server and no CPU contention, so that a measured open-loop capacity can be read against what
the batcher alone would allow. The queue handling mirrors ``MicroBatcher._loop`` (take what is
queued, wait as the policy's window says, run, answer); texts are single sentences.

``python -m benchmarks.fill_sim --fixed-ms 2 --per-text-ms 3 --rates 40,80,120,160,200``
(ONNX Runtime fp32 on a 2-core AVX2 CPU; torch there: ``--fixed-ms 13 --per-text-ms 3.5``).
"""

from __future__ import annotations

import argparse
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent_embeddings.batching import FillPolicy, MicroBatching

#: the policies compared: the default, the plain window, and no wait at all
POLICIES = {
    "default (fill)": MicroBatching(),
    "fill: false": MicroBatching(fill=False),
    "no wait": MicroBatching(fill=False, max_wait_ms=0),
}


@dataclass
class Outcome:
    p50_ms: float
    p99_ms: float
    mean_batch: float


def simulate(rate: float, service_s: Callable[[int], float], config: MicroBatching, n: int = 20_000,
             seed: int = 0) -> Outcome:
    """``n`` single-text calls arriving at ``rate`` per second (Poisson) through one batcher worker.

    >>> out = simulate(10, lambda texts: 0.002 + 0.003 * texts, MicroBatching(), n=2000)
    >>> out.mean_batch < 1.1 and 4.9 < out.p50_ms < 5.5
    True
    """
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(rate)
        arrivals.append(t)
    policy = FillPolicy(config)
    queue: deque[float] = deque()
    latencies: list[float] = []
    sizes: list[int] = []
    now, i = 0.0, 0

    def take_arrived(until: float) -> None:
        nonlocal i
        while i < n and arrivals[i] <= until:
            queue.append(arrivals[i])
            i += 1

    while i < n or queue:
        take_arrived(now)
        if not queue:  # the worker blocks until the next call
            now = arrivals[i]
            take_arrived(now)
        batch = [queue.popleft()]
        window = policy.open(now)
        while len(batch) < config.max_batch_size:
            if queue:
                batch.append(queue.popleft())
                continue
            wait = window.wait_s(len(batch), now)
            if wait <= 0:
                break
            if i < n and arrivals[i] <= now + wait:  # a call arrives within the wait
                now = arrivals[i]
                take_arrived(now)
                continue
            now += wait
            break
        policy.close(window, len(batch), len(batch), now)
        now += service_s(len(batch))
        take_arrived(now)
        policy.ended(len(batch), len(queue), now)
        latencies += [now - a for a in batch]
        sizes.append(len(batch))
    latencies.sort()
    return Outcome(latencies[len(latencies) // 2] * 1000, latencies[int(0.99 * len(latencies))] * 1000,
                   sum(sizes) / len(sizes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixed-ms", type=float, default=2.0, help="a forward pass's cost whatever its size")
    parser.add_argument("--per-text-ms", type=float, default=3.0, help="its cost per text")
    parser.add_argument("--rates", default="40,80,120,160,200,250", help="arrival rates per second, comma list")
    parser.add_argument("--n", type=int, default=20_000, help="calls per rate")
    args = parser.parse_args(argv)
    fixed, per_text = args.fixed_ms / 1000, args.per_text_ms / 1000

    def service(texts: int) -> float:
        return fixed + per_text * texts

    print(f"forward pass: {args.fixed_ms} ms + {args.per_text_ms} ms per text; {args.n} calls per rate")
    print("| rate/s | " + " | ".join(f"{name}: p50 / p99 ms, texts per pass" for name in POLICIES) + " |")
    print("|---" * (len(POLICIES) + 1) + "|")
    for rate in (float(r) for r in args.rates.split(",")):
        cells = []
        for config in POLICIES.values():
            out = simulate(rate, service, config, n=args.n)
            cells.append(f"{out.p50_ms:.1f} / {out.p99_ms:.1f}, {out.mean_batch:.1f}")
        print(f"| {rate:.0f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
