"""The servers of scenario 11 (:mod:`benchmarks.floor`): the stacks ours run on, answering a stored
vector with no model, no manager and no checks — what one request costs the stack itself.

    python -m benchmarks.floor_servers KIND    # prints "PORT <n>" once listening, serves until killed

KIND: ``asgi`` (uvicorn with httptools on uvloop, as ``serve --http`` runs it, and a bare ASGI app),
``asgi-hop`` (the same, each request also handed to a worker thread and back, as the micro-batcher
hands it to the model's thread), ``grpc-aio`` (``grpc.aio``, as ``serve --grpc``) and ``grpc-sync``
(grpc's thread-pool server). The answers have the size of ours for one 384-dimension vector. The
interpreter's switch interval is serve's (1 ms).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

SERVICE = "aios.embeddings.v1.EmbeddingService"


def _vector() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 384)).astype(np.float32)


def _http_body() -> bytes:
    from agent_embeddings.server.http_app import _render

    return _render(_vector(), "float", "hf", 12)


def _grpc_body() -> bytes:
    from agent_embeddings.protocol.convert import embed_response

    return bytes(embed_response(_vector(), model="hf", normalized=True, prompt_tokens=12, request_id="r",
                                total_us=1, inference_us=1).SerializeToString())


def serve_asgi(hop: bool) -> None:
    import uvicorn

    body = _http_body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    pool = ThreadPoolExecutor(1)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if hop:
            await asyncio.get_running_loop().run_in_executor(pool, int)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections wait in the backlog until the loop accepts them
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, server_header=False,
                            proxy_headers=False, http="httptools", loop="uvloop")
    uvicorn.Server(config).run(sockets=[sock])


def serve_grpc(aio: bool) -> None:
    import grpc

    body = _grpc_body()
    if aio:
        async def embed_async(request: bytes, context: Any) -> bytes:
            return body

        handler = grpc.unary_unary_rpc_method_handler(embed_async)
    else:
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: body)
    handlers = (grpc.method_handlers_generic_handler(SERVICE, {"Embed": handler}),)

    async def main_aio() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(handlers)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"PORT {port}", flush=True)
        await server.wait_for_termination()

    if aio:
        asyncio.run(main_aio())
        return
    server = grpc.server(ThreadPoolExecutor(16))
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


def main(kind: str) -> None:
    sys.setswitchinterval(0.001)  # as serve sets it
    if kind in ("asgi", "asgi-hop"):
        serve_asgi(hop=kind == "asgi-hop")
    elif kind in ("grpc-aio", "grpc-sync"):
        serve_grpc(aio=kind == "grpc-aio")
    else:
        raise SystemExit(f"unknown kind {kind!r}: asgi, asgi-hop, grpc-aio or grpc-sync")


if __name__ == "__main__":
    main(sys.argv[1])
