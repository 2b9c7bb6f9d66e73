"""Serve the OpenAI-compatible app (:mod:`.http_app`) on uvicorn: ``agent-embeddings serve --http``.

>>> server = HttpServer(manager, "127.0.0.1:0", ServerConfig())  # doctest: +SKIP
>>> with serve_in_thread(manager) as server: ...                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigurationError
from ..manager import EmbeddingGeneratorManager
from ..net import split_host_port
from .config import ServerConfig
from .http_app import ApiError, create_app

__all__ = ["ApiError", "HttpServer", "create_app", "parse_address", "serve_in_thread"]


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8080"`` for IPv6) -> ``(host, port)``."""
    parsed = split_host_port(address)
    if parsed is None or not parsed[0]:
        raise ConfigurationError(f"HTTP address {address!r} must look like HOST:PORT, e.g. 127.0.0.1:8080")
    return parsed


class HttpServer:
    """Runs :func:`create_app` on uvicorn inside the caller's event loop (see ``ServerHandle``).

    uvicorn installs no signal handlers here: the runner owns SIGTERM/SIGINT.
    """

    kind = "http"

    def __init__(
        self, manager: EmbeddingGeneratorManager, address: str, config: ServerConfig | None = None, *,
        metrics: Any = None,
    ) -> None:
        self.config = config or ServerConfig()
        self._host, self._port = parse_address(address)
        self.app = create_app(manager, self.config, serving=False, metrics=metrics)
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    async def start(self) -> None:
        import uvicorn

        from .http_protocol import BoundedHttpToolsProtocol

        cfg = self.config
        options = _tls_options(cfg)  # before binding: a bad file is a one-line error naming it
        sock = _bind(self._host, self._port)
        self._port = sock.getsockname()[1]
        protocol = BoundedHttpToolsProtocol.configured(cfg.max_header_bytes, cfg.read_timeout_s, self.app.state.metrics)
        config = uvicorn.Config(
            # proxy_headers off: nothing here reads the client address or scheme that X-Forwarded-*
            # would rewrite, and uvicorn's middleware for it scanned every request's headers
            self.app, lifespan="off", log_config=None, access_log=False, server_header=False, http=protocol,
            proxy_headers=False,
            timeout_graceful_shutdown=max(1, int(cfg.grace_period_s) + 1), **options,  # set again by stop()
        )
        self._server = _quiet_server_class()(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"http {self.address}")
        while not self._server.started:
            if self._task.done():  # startup failed: surface its error
                sock.close()
                self._task.result()
                raise ConfigurationError(f"HTTP server on {self.address} stopped during startup")
            await asyncio.sleep(0.01)

    def set_serving(self, serving: bool) -> None:
        self.app.state.embeddings.serving = serving

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests finish within ``grace_s``, then answer those left 503
        (OpenAI's shape) and cancel their work, so that worker threads stop after a forward pass."""
        if self._server is None or self._task is None:
            return
        # uvicorn's own cut-off (it cancels handlers into a plain-text 500) comes a second after ours
        self._server.config.timeout_graceful_shutdown = grace_s + 1.0
        self._server.should_exit = True
        abort = asyncio.get_running_loop().call_later(max(grace_s, 0.0), self.app.state.admission.abort)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace_s + 2.0)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        finally:
            abort.cancel()


@contextlib.contextmanager
def serve_in_thread(
    manager: EmbeddingGeneratorManager, address: str = "127.0.0.1:0", config: ServerConfig | None = None
) -> Iterator[HttpServer]:
    """Run an :class:`HttpServer` on a background thread (tests, notebooks); yields it serving.

    >>> with serve_in_thread(manager) as server:                 # doctest: +SKIP
    ...     OpenAI(base_url=f"http://{server.address}/v1", api_key="-").embeddings.create(...)
    """
    from .loops import loop_factory

    server = HttpServer(manager, address, config)
    loop = (loop_factory() or asyncio.new_event_loop)()  # the loop `serve` runs on
    started = threading.Event()
    failure: list[BaseException] = []

    async def start() -> None:
        try:
            await server.start()
            server.set_serving(True)
        except BaseException as exc:  # reported to the caller's thread below
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=loop.run_forever, name=f"http-server {address}", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    started.wait()
    try:
        if failure:
            raise failure[0]
        yield server
    finally:
        grace = server.config.grace_period_s
        if not failure:
            asyncio.run_coroutine_threadsafe(server.stop(grace), loop).result(timeout=grace + 5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def _tls_options(cfg: ServerConfig) -> dict[str, Any]:
    """uvicorn's TLS options, once the files are known to make a server context: a missing file or
    one that is not what it should be is a one-line error naming the file and the problem."""
    cert, key, ca = cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca
    if cert is None:
        if key is not None or ca is not None:
            raise ConfigurationError("HTTPS needs a certificate: give --tls-cert (and --tls-key)")
        return {}
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", ca)):
        if path is None:
            continue
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise ConfigurationError(f"cannot read the TLS file {str(path)!r} ({flag}): {exc.strerror}") from None

    def encrypted() -> str:  # instead of OpenSSL's prompt on the terminal
        raise ConfigurationError(f"the TLS key {str(key or cert)!r} is encrypted; give an unencrypted key file")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise ConfigurationError(f"the TLS certificate {str(cert)!r} (--tls-cert) holds no PEM certificate "
                                 f"({exc.reason or exc})") from None
    try:
        context.load_cert_chain(cert, key, password=encrypted)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            problem = f"the TLS key {str(key)!r} (--tls-key) is not the key of the certificate {str(cert)!r}"
        elif key is None:
            problem = f"the TLS certificate {str(cert)!r} holds no private key; give it with --tls-key"
        else:
            problem = f"the TLS key {str(key)!r} (--tls-key) holds no PEM private key ({exc.reason or exc})"
        raise ConfigurationError(problem) from None
    options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key) if key else None}
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise ConfigurationError(f"the TLS client CA {str(ca)!r} (--tls-client-ca) holds no PEM certificate "
                                     f"({exc.reason or exc})") from None
        options.update(ssl_ca_certs=str(ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this. Without it, uvicorn's separate writes of headers and
    # body meet Nagle's algorithm and the client's delayed ACK: +40 ms on every keep-alive call.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _no_signals(server: Any) -> Iterator[None]:
    yield


def _quiet_server_class() -> type:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own signal handling (the runner's loop handles SIGTERM)."""

        capture_signals = _no_signals

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            pass

    return QuietServer
