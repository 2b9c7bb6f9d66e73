"""Optional peer scenario: an established OpenAI-compatible embedding server, measured in the same run.

The peer is infinity-emb (michaelfeil/infinity), installed from PyPI into its own virtual
environment by ``benchmarks/setup_peer.sh``; it serves the same local all-MiniLM-L6-v2 folder
our ``hf`` generator loads. Without ``.venv-peer`` the scenario yields nothing.

Both servers and the in-process baseline inherit this process's environment, so thread settings
apply to all three alike. On a 2-core box with outside load, infinity's default (torch's OpenMP
pool on every core, beside its own pre/post-processing threads) was seen to thrash (16 concurrent
singles at ~5-7 texts/s; ~75 with ``OMP_NUM_THREADS=1``). The note records the setting.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .data import short_sentences
from .harness import Row, compare
from .scenarios import ROOT, _baseline, _manager, _server
from .traffic import closed_loop, poster

PEER_VENV = ROOT / ".venv-peer"
PEER_NAME = "infinity-emb"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CLIENTS = 16


def _free_port() -> int:
    # Bind-and-release: infinity takes a fixed --port, not 0. A race with another process is
    # possible but unlikely on a benchmark machine.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _peer_server(model_path: str, batch: int, ready_timeout_s: float = 300.0) -> Iterator[str]:
    """``infinity_emb v2`` on 127.0.0.1 serving ``model_path`` as model "peer"; yields its base URL."""
    import httpx

    port = _free_port()
    command = [
        str(PEER_VENV / "bin" / "infinity_emb"), "v2",
        "--model-id", model_path, "--served-model-name", "peer",
        "--engine", "torch", "--device", "cpu", "--batch-size", str(batch),
        # Its own warm-up times a 64 x 256-token batch (~16 s on 2 cores); we warm up with our requests.
        "--no-model-warmup",
        # "warning" also silences uvicorn's per-request access log, which our server does not write.
        "--log-level", "warning",
        "--host", "127.0.0.1", "--port", str(port),
    ]
    # Offline (the folder is local) and no anonymous usage statistics (posthog) phoning home.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{port}"
    # Output goes to a file, not a pipe nobody reads (a full pipe would stall the server).
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{PEER_NAME} exited with {proc.returncode}:\n{log.read()[-3000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{PEER_NAME} not healthy after {ready_timeout_s:.0f} s")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _peer_version() -> str:
    out = subprocess.run([str(PEER_VENV / "bin" / "python"), "-c",
                          f"import importlib.metadata as m; print(m.version({PEER_NAME!r}))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def peer(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """infinity-emb vs st.encode (and our HTTP server, in the note), scenario 3's two workloads."""
    if not (PEER_VENV / "bin" / "infinity_emb").exists():
        print(f"peer: skipped, {PEER_VENV.name} missing; create it with benchmarks/setup_peer.sh",
              file=sys.stderr, flush=True)
        return
    import numpy as np

    from agent_embeddings.backends.huggingface import resolve_model_path

    manager = _manager()
    texts = short_sentences(n)
    baseline = _baseline(manager, texts, batch)
    version = _peer_version()
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    with _peer_server(resolve_model_path(MODEL), batch) as peer_url, _server("http") as ours_address:
        posts = {
            "peer": poster(peer_url, "peer", route="/embeddings"),  # infinity has no /v1 prefix by default
            "ours": poster(f"http://{ours_address}", "hf"),
        }
        probe = texts[:8]
        for post in posts.values():  # warm both: a single and a full batch
            post(texts[0])
            post(texts[:batch])
        ref = manager.encode("hf", probe)
        got = np.stack(posts["peer"](probe))
        cos = (got * ref).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))

        def in_batches(post: Callable[[object], list]) -> Callable[[], object]:
            return lambda: [post(texts[i : i + batch]) for i in range(0, n, batch)]

        workloads: dict[str, Callable[[Callable[[object], list]], Callable[[], object]]] = {
            f"{CLIENTS} concurrent singles": lambda post: closed_loop(post, texts, CLIENTS),
            f"batches of {batch}": in_batches,
        }
        for variant, make in workloads.items():
            # Each server is interleaved with its own st.encode runs (compare is pairwise), so the
            # ratios to st.encode are the figures to compare; both servers idle while the other runs.
            peer_s, base_s, peer_spread = compare(make(posts["peer"]), baseline, repeat)
            ours_s, ours_base_s, ours_spread = compare(make(posts["ours"]), baseline, repeat)
            yield Row(
                "8 peer", f"{PEER_NAME} {version}: {variant}", "texts/s", n / peer_s, "st.encode batch", n / base_s,
                note=f"{PEER_NAME} {version} (torch CPU, max batch {batch}, OMP_NUM_THREADS={threads}); "
                     f"its vectors vs ours on {len(probe)} sentences: min cosine {cos.min():.6f}",
                extra={"peer_version": version, "min_cosine": float(cos.min())}, spread=peer_spread,
            )
            yield Row("8 peer", f"agent-embeddings serve --http: {variant}", "texts/s", n / ours_s,
                      "st.encode batch", n / ours_base_s, spread=ours_spread)
