"""The benchmarks' instruments that need neither a load generator (wrk, grpc-go) nor a model: a
process's CPU clock and its main thread's, the garbage collector's clock, and the requests the native
gRPC generator sends. The scenarios that use them (openloop, floor) need `make loadgen` and are left
out of the smoke test, so without these nothing would run them."""

from __future__ import annotations

import base64
import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import grpc_loadgen
from benchmarks.modeltime import ModelClock, main_thread_cpu_s, process_cpu_s

_BURN_IN_A_THREAD = """
import sys, threading, time

def burn():
    while time.thread_time() < 0.3:
        pass

worker = threading.Thread(target=burn)
worker.start()
worker.join()
start = time.thread_time()
while time.thread_time() - start < 0.2:  # and 0.2 s on the main thread
    pass
print("done", flush=True)
sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def burned() -> Iterator[int]:
    """A child that burned 0.3 s on a thread that has ended, then 0.2 s on its main thread; its pid,
    while it waits."""
    child = subprocess.Popen([sys.executable, "-c", _BURN_IN_A_THREAD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        yield child.pid
    finally:
        child.communicate("", timeout=30)


def test_a_process_s_cpu_counts_the_threads_that_have_ended(burned: int):
    """The floor scenario's CPU reading: the ended thread's 0.3 s counts with the main thread's 0.2 s
    (the first reader summed the live threads' schedstat, which has lost it: ~0.25 s)."""
    assert process_cpu_s(burned) >= 0.5


def test_a_server_s_event_loop_is_read_from_its_main_thread_alone(burned: int):
    """The floor scenario's event-loop reading: the main thread's 0.2 s, not the other thread's 0.3 s."""
    main, whole = main_thread_cpu_s(burned), process_cpu_s(burned)
    assert 0.2 <= main <= whole - 0.3


def test_the_model_clock_times_the_collector_only_when_it_watches_it():
    unwatched, watched = ModelClock(), ModelClock()
    saved = list(gc.callbacks)
    try:
        watched.watch_gc()
        gc.collect(2)
    finally:
        gc.callbacks[:] = saved
    reading = watched.read()
    assert reading.gc_full >= 1 and reading.gc_s > 0
    assert unwatched.read().gc_full == 0


def test_the_native_generator_s_requests_are_the_texts_serialized_and_follow_them(tmp_path: Path):
    from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2 as pb

    def sent(texts_file: Path) -> list[tuple[str, list[str]]]:
        encoded = json.loads(grpc_loadgen._requests_file(texts_file, "hf").read_text())
        requests = [pb.EmbedRequest.FromString(base64.b64decode(e)) for e in encoded]
        return [(r.model, list(r.inputs)) for r in requests]

    assert sent(grpc_loadgen.write_texts(["one text", "another"], tmp_path)) == [("hf", ["one text"]), ("hf", ["another"])]
    assert sent(grpc_loadgen.write_texts(["a third"], tmp_path)) == [("hf", ["a third"])]  # not the old requests
