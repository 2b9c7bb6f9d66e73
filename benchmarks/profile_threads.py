"""Where the micro-batch worker's time goes with 16 threads x 1 sentence in-process, by py-spy.

    python -m benchmarks.profile_threads [--n 800] [--rate 200]

Runs the closed loop of scenario ``2 threads`` (the default generator) under ``py-spy record``
twice: once sampling every thread, idle or not (``--idle``), and once sampling only the thread
that holds the GIL (``--gil``); then sums the samples by what the worker thread was doing (the
model's forward pass, tokenizing, waiting for calls, answering them, ...) and by which thread
held the GIL. Needs py-spy (``pip install 'agent-embeddings[profile]'``) and the right to trace
a child process (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: (label, substrings any of which puts a stack in it), first match wins; stacks are root first
WORKER_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model forward (torch)", ("forward (",)),
    ("tokenizing inside encode", ("tokenize (", "_batch_encode_plus", "__call__ (transformers")),
    ("usage token count (a second tokenizer call)", ("token_counts (",)),
    ("rest of encode (Python around the model)", ("encode (",)),
    ("answering callers (set_result, notify)", ("set_result (", "notify")),
    ("waiting for calls (queue get)", ("get (", "wait (")),
)


def _workload(n: int) -> None:
    from agent_embeddings import HuggingFaceEmbeddingGenerator

    from .data import short_sentences
    from .traffic import closed_loop

    gen = HuggingFaceEmbeddingGenerator(model_name="sentence-transformers/all-MiniLM-L6-v2", batch_size=64,
                                        micro_batching={"max_batch_size": 64})
    texts = short_sentences(n)
    gen.warm_up()  # loading is not the steady state
    gen.generate(texts[0])
    closed_loop(gen.generate, texts, 16)()
    gen.close()


def _record(n: int, rate: int, mode: str, out: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    subprocess.run([spy, "record", "--format", "raw", "--threads", "--nonblocking", "--rate", str(rate),
                    "-o", str(out), mode, "--", sys.executable, "-m", "benchmarks.profile_threads",
                    "--workload", "--n", str(n)], check=True, capture_output=True)


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def _worker_kind(frames: list[str]) -> str:
    if "_loop (" in frames[-1]:  # blocked in the C queue's get (no Python frame below the loop)
        return "waiting for calls (queue get)"
    text = ";".join(frames[1:])
    for label, marks in WORKER_KINDS:
        if any(m in text for m in marks):
            return label
    return "other"


def _other_kind(frames: list[str]) -> str:
    text = ";".join(frames)
    if "warm_up (" in text or "_find_and_load" in text:
        return "start-up: imports, loading the model"
    if "generate (" in text:
        return "a calling thread in generate() (contract, conversion, submit, wake-up)"
    return "another thread (the pool's map, interpreter)"


def summarize(idle: Path, gil: Path) -> str:
    lines = []
    worker: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    for frames, count in _stacks(idle):
        if any("_loop (" in f and "batching" in f for f in frames):
            kind = _worker_kind(frames)
            worker[kind] += count
            if kind == "other":
                others[" <- ".join(reversed(frames[-3:]))] += count
    total = sum(worker.values()) or 1
    lines.append(f"micro-batch worker thread, all samples ({total}):")
    lines += [f"  {share / total:6.1%}  {label}" for label, share in worker.most_common()]
    lines += [f"    other: {share / total:6.1%}  {where}" for where, share in others.most_common(5)]
    holders: collections.Counter[str] = collections.Counter()
    for frames, count in _stacks(gil):
        is_worker = any("_loop (" in f and "batching" in f for f in frames)
        holders[("worker: " + _worker_kind(frames)) if is_worker else _other_kind(frames)] += count
    total = sum(holders.values()) or 1
    lines.append(f"the thread holding the GIL ({total} samples):")
    lines += [f"  {share / total:6.1%}  {label}" for label, share in holders.most_common()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_threads", description=__doc__)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--workload", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.workload:
        _workload(args.n)
        return 0
    with tempfile.TemporaryDirectory(prefix="ae-spy-") as folder:
        idle, gil = Path(folder) / "idle.txt", Path(folder) / "gil.txt"
        _record(args.n, args.rate, "--idle", idle)
        _record(args.n, args.rate, "--gil", gil)
        print(summarize(idle, gil))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
