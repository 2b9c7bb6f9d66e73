"""The AIOS gRPC server: a manager's generators behind ``aios.embeddings.v1.EmbeddingService``.

The servicer is thin: it checks credentials and concurrency, decodes the request with
:mod:`agent_embeddings.protocol.convert`, hands it to the serving core (:mod:`.serving`: the
model, the limits, the vectors; local models run in a worker thread, so the event loop keeps
answering health checks under load) and encodes the answer. A caller's mistake is answered with
a message that says what to fix; a backend's failure with a status and a generic message with
the request id, its text staying in this server's log. Every call is counted and logged once
(:meth:`~agent_embeddings.server.metrics.ServerMetrics.request_done`). It also serves
``grpc.health.v1.Health`` (SERVING only after :meth:`GrpcServer.set_serving`) and reflection.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ..errors import AgentEmbeddingsError, ConfigurationError, InvalidInputError, RateLimitError
from ..manager import EmbeddingGeneratorManager
from ..net import is_loopback, split_host_port
from ..protocol import SERVICE_NAME
from ..protocol.convert import embed_response, info_response, parse_embed_request, pb, status_for_error
from ..version import __version__
from .config import ServerConfig
from .serving import BackendFailed, Dialect, EmbedQuery, ServeError, resolve_model, serve_embed

__all__ = ["GrpcServer"]

log = logging.getLogger("agent_embeddings.server.grpc")


class _Undecodable:
    """What a request whose bytes do not parse becomes: answered INVALID_ARGUMENT, not a traceback."""

    def __init__(self, message: str) -> None:
        self.message = message


def _lenient(message_type: Any) -> Any:
    from google.protobuf.message import DecodeError

    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return _Undecodable(f"the request is not a valid {message_type.DESCRIPTOR.full_name}: {exc}")

    return parse


def _add_servicer(servicer: _Servicer, server: grpc.aio.Server) -> None:
    """The generated ``add_EmbeddingServiceServicer_to_server``, with requests parsed leniently."""
    handlers = {
        "Embed": grpc.unary_unary_rpc_method_handler(
            servicer.Embed, request_deserializer=_lenient(pb.EmbedRequest),
            response_serializer=pb.EmbedResponse.SerializeToString,
        ),
        "Info": grpc.unary_unary_rpc_method_handler(
            servicer.Info, request_deserializer=_lenient(pb.InfoRequest),
            response_serializer=pb.InfoResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class _Refused(Exception):
    """A call answered with an error status: the code, the message for the caller, and the cause
    as ``request_errors_total`` labels it (the same labels as the HTTP server's, see metrics.py)."""

    def __init__(self, code: grpc.StatusCode, message: str, error_type: str) -> None:
        super().__init__(message)
        self.code, self.message, self.error_type = code, message, error_type


# A caller's request id is echoed in answers and logs: only a plain token, lest it forge log lines.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def _request_id(given: str) -> str:
    return given if _SAFE_ID.fullmatch(given) else uuid.uuid4().hex


class _Servicer:
    """Embed and Info on top of the manager."""

    def __init__(self, manager: EmbeddingGeneratorManager, config: ServerConfig, metrics: Any) -> None:
        self.manager = manager
        self.config = config
        self.metrics = metrics
        self.active = 0  # Embed calls being worked on (one event loop: no lock needed)
        self.calls = 0  # Embed calls answered successfully

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        return await self._answer("Embed", self._embed_call, request, context)  # type: ignore[no-any-return]

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        return await self._answer("Info", self._info_call, request, context)  # type: ignore[no-any-return]

    async def _answer(self, route: str, handler: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Run ``handler``; answer a refusal with its status; count the call once, as the HTTP server does."""
        started = time.perf_counter()
        m = self.metrics
        in_flight = m.child(m.in_flight, "grpc")
        in_flight.inc()
        status, error_type = "OK", None
        texts = len(request.inputs) if isinstance(request, pb.EmbedRequest) else None
        try:
            return await handler(request, context)
        except _Refused as refused:
            status, error_type = refused.code.name, refused.error_type
            await context.abort(refused.code, refused.message)
        except asyncio.CancelledError:
            # The caller cancelled, or its deadline passed (then gRPC cancels the handler too).
            remaining = context.time_remaining()
            late = remaining is not None and remaining <= 0
            status, error_type = ("DEADLINE_EXCEEDED", "deadline_exceeded") if late else ("CANCELLED", "cancelled")
            raise
        except Exception:  # a bug here: a generic INTERNAL, not grpc's "Unexpected <class>: <text>"
            log.exception("%s failed", route)
            status, error_type = "INTERNAL", "server_error"
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            in_flight.dec()
            m.request_done("grpc", route, status, time.perf_counter() - started, texts=texts, error_type=error_type)
        raise AssertionError("unreachable")  # context.abort raises

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self.config.api_keys:
            return
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
                token = value[7:].strip()
        if not self.config.accepts_key(token):
            message = "missing bearer token" if token is None else "invalid bearer token"
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, message, "invalid_api_key")

    async def _embed_call(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        self._authorize(context)
        if isinstance(request, _Undecodable):
            raise _invalid(request.message)
        if self.active >= self.config.max_concurrency:
            # Refuse at once: a queue without bound only turns overload into timeouts.
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server busy: {self.active} calls in progress (max_concurrency={self.config.max_concurrency}); retry later",
                "server_busy",
            )
        self.active += 1
        try:
            response = await self._embed(request, _request_id(request.request_id), time.perf_counter())
        finally:
            self.active -= 1
        self.calls += 1
        return response

    async def _embed(self, request: pb.EmbedRequest, request_id: str, started: float) -> pb.EmbedResponse:
        try:
            call = parse_embed_request(request)
        except InvalidInputError as exc:
            raise _invalid(str(exc)) from None
        query = EmbedQuery(call.model, call.texts, call.input_type, call.dimensions, call.normalize)
        try:
            served = await serve_embed(self.manager, query, self.config, WORDS, self.metrics)
        except ServeError as exc:
            raise _refused(exc) from None
        except BackendFailed as exc:
            raise self._backend_failed(exc.cause, exc.model, request_id) from None
        response = embed_response(
            served.vectors,
            model=served.model,
            normalized=served.normalized,
            prompt_tokens=served.prompt_tokens,
            request_id=request_id,
            total_us=int((time.perf_counter() - started) * 1e6),
            inference_us=int(served.compute_s * 1e6),
        )
        log.debug(
            "Embed %s: model=%s inputs=%d selection=%s %.1fms",
            request_id, served.model, len(call.texts), call.selection, (time.perf_counter() - started) * 1e3,
        )
        return response

    def _backend_failed(self, exc: Exception, name: str, request_id: str) -> _Refused:
        """Log the details beside the request id; the caller gets a status and a generic message."""
        code, message = status_for_error(exc, model=name, request_id=request_id)
        level = logging.WARNING if isinstance(exc, RateLimitError) else logging.ERROR
        log.log(
            level, "Embed %s: model %r failed (%s): %s: %s", request_id, name, code.name, type(exc).__name__, exc,
            exc_info=not isinstance(exc, AgentEmbeddingsError),  # an unexpected error: its traceback too
        )
        return _Refused(code, message, type(exc).__name__)

    async def _info_call(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        self._authorize(context)
        if isinstance(request, _Undecodable):
            raise _invalid(request.message)
        if request.model:
            try:
                models = [self.manager.info(resolve_model(self.manager, request.model, WORDS))]
            except ServeError as exc:
                raise _refused(exc) from None
        else:
            models = self.manager.list_generators()
        return info_response(
            models,
            max_inputs=self.config.max_inputs,
            max_message_bytes=self.config.max_request_bytes,
            max_concurrency=self.config.max_concurrency,
            server_version=f"agent-embeddings {__version__}",
        )


#: The AIOS wording of the serving core's refusals (an empty model name: the only one served).
WORDS = Dialect(
    server="grpc",
    field="inputs",
    empty="inputs is empty; send at least one text",
    too_many="{count} inputs in one request; this server accepts at most {limit} (see Info.max_inputs_per_request)",
    too_long="{where} has {length} characters; this server accepts at most {limit} per text",
    bad_text="{error}",
    too_wide="model {model!r}: dimensions={dimensions} requested but the model delivers {width}-dimensional "
    "vectors; dimensions can only shrink vectors",
    unknown_model="unknown model {model!r}; served models: {served}",
    no_default_model="model is empty and this server serves {count} models ({served})",
)
_STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "too_large": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
}


def _invalid(message: str) -> _Refused:
    return _Refused(grpc.StatusCode.INVALID_ARGUMENT, message, "invalid_request_error")


def _refused(exc: ServeError) -> _Refused:
    """The serving core's refusal as the status its reason maps to."""
    return _Refused(_STATUS[exc.reason], exc.message, exc.error_type)


class GrpcServer:
    """The AIOS gRPC server of :mod:`agent_embeddings.server.runner` (``serve --grpc HOST:PORT``).

    Port 0 binds an ephemeral port; :attr:`address` tells the real one after :meth:`start`.
    """

    kind = "grpc"

    def __init__(
        self, manager: EmbeddingGeneratorManager, address: str, config: ServerConfig | None = None, *,
        metrics: Any = None,
    ) -> None:
        self.manager = manager
        self.config = config or ServerConfig()
        if metrics is None:
            from .metrics import ServerMetrics

            metrics = ServerMetrics(manager)
        self.metrics = metrics
        self._metrics_server: Any = None
        #: ``host:port`` of the Prometheus endpoint once started (``config.metrics_port`` set)
        self.metrics_address: str | None = None
        self._requested = address
        if address.startswith("unix:"):
            self._host, self._port = address, None
        else:
            parsed = split_host_port(address)
            if parsed is None:
                raise ConfigurationError(f"--grpc {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9000 or [::]:9000")
            host, self._port = parsed
            self._host = f"[{host}]" if ":" in host else (host or "0.0.0.0")
        if bool(self.config.tls_cert) != bool(self.config.tls_key):
            raise ConfigurationError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        if self.config.tls_client_ca and not self.config.tls_cert:
            raise ConfigurationError("--tls-client-ca needs TLS: give --tls-cert and --tls-key too")
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._servicer = _Servicer(manager, self.config, self.metrics)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str:
        """``host:port`` bound (or asked for, before start)."""
        return self._host if self._port is None else f"{self._host}:{self._port}"

    @property
    def embed_calls(self) -> int:
        """Embed calls answered successfully so far."""
        return self._servicer.calls

    @property
    def active_calls(self) -> int:
        """Embed calls being worked on now."""
        return self._servicer.active

    def _credentials(self) -> grpc.ServerCredentials | None:
        cfg = self.config
        if not cfg.tls_cert:
            return None
        assert cfg.tls_key is not None
        try:
            pair = (cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())
            client_ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca else None
        except OSError as exc:
            raise ConfigurationError(f"cannot read TLS file {exc.filename!r}: {exc.strerror}") from None
        return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=bool(client_ca))

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                # --max-request-bytes bounds what callers send; answers are as large as the vectors
                # asked for (gRPC's default: no limit), which max_inputs already bounds.
                ("grpc.max_receive_message_length", self.config.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                # Without this, a second server could silently share the port on Linux.
                ("grpc.so_reuseport", 0),
            ]
        )
        _add_servicer(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
        )
        await self._set_health(False)
        bind = self.address
        creds = self._credentials()
        local = bind.startswith("unix:") or is_loopback(bind.rpartition(":")[0])
        if creds is None and self.config.api_keys and not local:
            log.warning("bearer tokens will travel in plain text on %s; configure TLS (--tls-cert/--tls-key)", bind)
        try:
            port = server.add_secure_port(bind, creds) if creds else server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise ConfigurationError(f"cannot bind gRPC server to {bind!r}: {exc}") from None
        if not port and self._port is not None:
            raise ConfigurationError(f"cannot bind gRPC server to {bind!r} (address in use or not local)")
        if self._port is not None:
            self._port = port
        await server.start()
        self._server = server
        if self.config.metrics_port is not None:
            from .metrics import start_metrics_server

            host = self._host if self._port is not None else "127.0.0.1"
            host = host.strip("[]") or "0.0.0.0"
            try:
                self._metrics_server, _thread, port = start_metrics_server(self.metrics, host, self.config.metrics_port)
            except OSError as exc:
                await server.stop(0)
                raise ConfigurationError(f"cannot serve metrics on {host}:{self.config.metrics_port}: {exc.strerror}") from None
            shown = f"[{host}]" if ":" in host else host
            self.metrics_address = f"{shown}:{port}"

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)

    def set_serving(self, serving: bool) -> None:
        """Report SERVING (models loaded) or NOT_SERVING through ``grpc.health.v1``."""
        task = asyncio.get_running_loop().create_task(self._set_health(serving))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace_s``, close."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace_s)
        if self._metrics_server is not None:
            metrics_server, self._metrics_server = self._metrics_server, None
            await asyncio.to_thread(metrics_server.shutdown)
            metrics_server.server_close()
