"""The micro-batcher under open load, simulated: Poisson arrivals, a forward pass that costs
``fixed + per_text x texts``, and the real :class:`~agent_embeddings.batching.FillPolicy` deciding
when each batch closes (on the simulation's clock, which it takes from its caller).

What it answers: how much latency the waiting policy itself adds at a given load, with no noise,
no server and no CPU contention, so that a measured open-loop capacity can be read against what
the batcher alone would allow. :func:`run_worker` mirrors ``MicroBatcher._loop`` (take what is
queued, wait as the policy's window says, run, answer), open loop or closed; the policy's tests in
``tests/test_batching.py`` drive it through the same function.

``python -m benchmarks.fill_sim --fixed-ms 2 --per-text-ms 3 --rates 40,80,120,160,200``
(ONNX Runtime fp32 on a 2-core AVX2 CPU; torch there: ``--fixed-ms 13 --per-text-ms 3.5``).
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
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


def run_worker(config: MicroBatching, arrivals: list[float], service_s: Callable[[int], float],
               think_s: float | None = None, rounds: int = 1) -> tuple[FillPolicy, list[int], list[float]]:
    """The worker's loop (``MicroBatcher._loop``) on a made-up clock: calls arrive at ``arrivals``; a
    backend call of k calls takes ``service_s(k)``; with ``think_s`` each caller comes back that long
    after its answer, ``rounds`` times in all (a closed loop). Returns the policy, the calls per
    batch and every call's latency (seconds, arrival to answer)."""
    policy = FillPolicy(config)
    pending = sorted((t, caller, 0) for caller, t in enumerate(arrivals))  # (due, caller, round)
    head = 0  # pending[head:] are the calls not yet taken; a cursor, not pop(0): 20,000 calls stay fast
    now = 0.0
    sizes: list[int] = []
    latencies: list[float] = []
    while head < len(pending):
        now = max(now, pending[head][0])
        batch = [pending[head]]
        head += 1
        window = policy.open(now)
        while len(batch) < config.max_batch_size:
            remaining = window.wait_s(len(batch), now)
            if head == len(pending) or pending[head][0] > now + remaining:  # none queued, none in before the wait ends
                now += remaining
                break
            now = max(now, pending[head][0])
            batch.append(pending[head])
            head += 1
        policy.close(window, len(batch), len(batch), now)
        now += service_s(len(batch))
        policy.ended(len(batch), bisect.bisect_right(pending, (now, math.inf, math.inf), lo=head) - head, now)
        sizes.append(len(batch))
        latencies += [now - due for due, _, _ in batch]
        if think_s is not None:
            for _, caller, round_ in batch:
                if round_ + 1 < rounds:
                    bisect.insort(pending, (now + think_s, caller, round_ + 1), lo=head)
    return policy, sizes, latencies


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
    _, sizes, latencies = run_worker(config, arrivals, service_s)
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
