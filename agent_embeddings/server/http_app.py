"""The OpenAI-compatible HTTP API as an ASGI app: ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health``.

A caller of :class:`~agent_embeddings.EmbeddingGeneratorManager` and nothing more: each
generator is served under its manager name (aliases work too). Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``; the server keeps serving after every one.
:mod:`.http` runs this app on uvicorn.

>>> app = create_app(manager, ServerConfig())       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import InvalidInputError, RateLimitError
from ..manager import EmbeddingGeneratorManager
from ..vectors import to_float32_bytes
from ..version import __version__
from .config import ServerConfig
from .http_admission import Admission, Admit
from .http_middleware import RequestMetrics, note_request
from .http_route import DirectRoute, Express, json_body
from .openai_schema import EmbeddingRequest, EmbeddingResponse, ErrorResponse, ModelCard, ModelList, error_body
from .serving import BackendFailed, Dialect, EmbedQuery, ServeError, resolve_model, serve_embed

__all__ = ["ApiError", "create_app"]

log = logging.getLogger("agent_embeddings.server.http")

# Serializing a big float response takes a while: do it off the event loop above this size.
_OFFLOAD_VALUES = 64 * 1024
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse, "description": d}
    for s, d in [
        (400, "Malformed or invalid input"),
        (401, "Missing or wrong API key"),
        (404, "Unknown model"),
        (413, "Too many inputs, too long a text or too large a body"),
        (429, "The server is at its bound on concurrent work; retry"),
        (500, "The backend failed"),
    ]
}


class ApiError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", *,
        param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers
        #: the metric label of the failure: the SDK error's class name, or the API error code
        self.error_type = error_type or code or type_

    def response(self) -> JSONResponse:
        note_request(status=self.status, error_type=self.error_type)  # RequestMetrics counts it by this cause
        body = error_body(self.message, self.type, param=self.param, code=self.code)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class _App(FastAPI):
    """The app, with ``POST /v1/embeddings`` taken straight to its chain (``hot``: metrics,
    admission, the route) in front of the framework's own layers: Starlette's error middleware
    (``hot`` answers a crash the same way), FastAPI's body limit (none is set) and telemetry
    (the chain is skipped while FastAPI's OpenTelemetry is on). Those layers cost about a
    sixth of the event loop's time per request (py-spy, 16 clients x 1 sentence)."""

    hot: Any = None
    #: (whether FastAPI's OpenTelemetry is on, when to ask again): asking reads the environment
    #: through OpenTelemetry's provider getters, ~a tenth of the event loop's Python time per
    #: request when FastAPI asked on every one; a provider set later is seen within a second.
    _otel: tuple[bool, float] = (False, 0.0)  # not _telemetry: FastAPI's own attribute

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        hot = self.hot
        if (
            hot is not None and scope["type"] == "http" and scope["path"] == _HOT_PATH and scope["method"] == "POST"
            and not self._telemetry_on()
        ):
            if self.root_path:
                scope["root_path"] = self.root_path
            scope["app"] = self
            await hot(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _telemetry_on(self) -> bool:
        on, until = self._otel
        now = time.monotonic()
        if now >= until:
            telemetry = getattr(self, "_native_telemetry", None)  # FastAPI >= 0.16x: OpenTelemetry, when configured
            on = telemetry is not None and bool(telemetry.enabled())
            self._otel = (on, now + 1.0)
        return on


_HOT_PATH = "/v1/embeddings"


@dataclass
class _State:
    manager: EmbeddingGeneratorManager
    config: ServerConfig
    serving: bool
    created: int


def create_app(
    manager: EmbeddingGeneratorManager, config: ServerConfig | None = None, *, serving: bool = True,
    metrics: Any = None,
) -> FastAPI:
    """The ASGI app. ``serving`` is the initial health status (HttpServer starts it False).

    ``metrics`` (a :class:`~agent_embeddings.server.metrics.ServerMetrics`) is shared when a gRPC
    server runs in the same process; by default the app makes its own.
    """
    config = config or ServerConfig()
    state = _State(manager, config, serving, int(time.time()))
    if metrics is None:
        from .metrics import ServerMetrics

        metrics = ServerMetrics(manager)
    app = _App(
        title="agent-embeddings",
        summary="OpenAI-compatible embeddings for every generator of a subject spec.",
        version=__version__,
    )
    admission = Admission(config)
    app.state.embeddings = state
    app.state.metrics = metrics
    #: key, limits and slot checked before any body byte is read; abort() at the end of a shutdown
    app.state.admission = admission

    async def embeddings(request: Request) -> Response:
        # The admission has read the body (within the limit) and holds the slot of max_concurrency;
        # errors are counted by RequestMetrics, from the status and what ApiError.response() notes.
        try:
            return await _serve(manager, config, metrics, _parse(await request.body()))
        except ApiError as exc:
            return exc.response()
        except Exception:  # noqa: BLE001 - as the app's catch-all handler: logged, a 500, still serving
            log.exception("unexpected error on POST /v1/embeddings")
            return ApiError(500, "Internal server error; see the server log.", "server_error").response()

    route = DirectRoute(
        "/v1/embeddings", embeddings, methods=["POST"], openapi_extra=json_body(EmbeddingRequest),
        response_model=EmbeddingResponse, responses=_ERRORS, tags=["embeddings"],
        summary="Embed a text or a list of texts",
    )
    app.router.routes.append(route)
    # Innermost first: the route answers POST /v1/embeddings straight once admitted, inside the metrics.
    app.add_middleware(Express, route=route)
    app.add_middleware(Admit, admission=admission)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts the admission's refusals too
    if config.cors_origins:  # off unless origins are configured
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    else:  # the same chain as the stack's, less the framework's layers around it (see _App)
        def crash() -> Response:
            log.exception("unexpected error on POST %s", route.path)
            return ApiError(500, "Internal server error; see the server log.", "server_error").response()

        app.hot = RequestMetrics(Admit(route.app, admission=admission), metrics=metrics, crash=crash)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return ApiError(500, "Internal server error; see the server log.", "server_error").response()

    @app.get("/health", tags=["health"], summary="200 when serving, 503 while starting or draining")
    async def health() -> JSONResponse:
        status = "serving" if state.serving else "not_serving"
        return JSONResponse({"status": status}, status_code=200 if state.serving else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (no key needed; no secrets in it)")
    async def prometheus_metrics() -> Response:
        from .metrics import CONTENT_TYPE

        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # The API key of /v1/models and /v1/embeddings is checked by the admission (.http_admission).
    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS, tags=["models"],
             summary="The served generators")
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard.of(info, created=state.created) for info in manager.list_generators()])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS, tags=["models"],
             summary="One served generator (name or alias)")
    async def get_model(model_id: str) -> ModelCard:
        return ModelCard.of(manager.info(_resolve(manager, model_id)), created=state.created)

    return app


#: The OpenAI-style wording of the serving core's refusals.
WORDS = Dialect(
    server="http",
    field="input",
    empty="'input' is an empty list: send at least one text.",
    too_many="'input' has {count} texts; this server accepts at most {limit} per request. Split the batch.",
    too_long="{where} has {length} characters; this server accepts at most {limit} per text (--max-input-chars).",
    bad_text="{error}.",
    too_wide="dimensions={dimensions} is larger than the {width} dimensions of model {model!r}.",
    unknown_model="The model {model!r} does not exist on this server; served models: {served}.",
)
_STATUS = {"invalid": 400, "too_large": 413, "not_found": 404}


async def _serve(manager: EmbeddingGeneratorManager, config: ServerConfig, metrics: Any, body: EmbeddingRequest) -> Response:
    """``POST /v1/embeddings``: the request through the serving core, the answer in OpenAI's JSON."""
    note_request(texts=1 if isinstance(body.input, str) else len(body.input))  # for the access log
    texts = _texts(body)
    query = EmbedQuery(body.model, texts, input_type=body.input_type, dimensions=body.dimensions)
    try:
        served = await serve_embed(manager, query, config, WORDS, metrics)
    except ServeError as exc:
        raise _refused(exc) from None
    except BackendFailed as exc:
        raise _backend_failed(exc) from None
    vectors, tokens = served.vectors, served.prompt_tokens or 0
    if vectors.size > _OFFLOAD_VALUES:
        payload = await asyncio.to_thread(_render, vectors, body.encoding_format, served.model, tokens)
    else:
        payload = _render(vectors, body.encoding_format, served.model, tokens)
    return Response(payload, media_type="application/json")


def _refused(exc: ServeError) -> ApiError:
    return ApiError(_STATUS[exc.reason], exc.message, param=exc.param, code=exc.code, error_type=exc.error_type)


def _backend_failed(failed: BackendFailed) -> ApiError:
    """A refused input is the caller's to fix (its message says how); anything else is said without detail."""
    exc, name = failed.cause, failed.model
    error_type = type(exc).__name__
    if isinstance(exc, InvalidInputError):
        return ApiError(400, str(exc), param="input", error_type=error_type)
    if isinstance(exc, RateLimitError):
        log.warning("generator %r is rate limited by its backend", name, exc_info=exc)
        return ApiError(429, f"The backend of model {name!r} is rate limited; retry shortly.", "rate_limit_error",
                        code="backend_rate_limited", headers={"Retry-After": "1"}, error_type=error_type)
    log.error("generator %r failed", name, exc_info=exc)
    return ApiError(500, f"The backend of model {name!r} failed; see the server log.", "server_error",
                    error_type=error_type)


def _render(vectors: np.ndarray, encoding: str, model: str, tokens: int) -> bytes:
    """The response body, built directly (pydantic/jsonable_encoder would cost more than the model)."""
    if encoding == "base64":
        packed = to_float32_bytes(vectors)
        step = vectors.shape[1] * 4
        embeddings: list[Any] = [
            base64.b64encode(packed[i : i + step]).decode("ascii") for i in range(0, len(packed), step)
        ]
    else:
        # float32 -> the float64 of the same value (round-trips exactly), written by orjson: the
        # same JSON document as json.dumps of the lists (shortest digits), 14x faster at 64 x 384.
        embeddings = list(vectors.astype(np.float64))
    body = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _parse(raw: bytes) -> EmbeddingRequest:
    """The request body, validated as FastAPI's route would (same messages), straight from JSON."""
    if not raw.strip():
        raise ApiError(400, "A JSON request body is required.")
    try:
        return EmbeddingRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    if errors and errors[0].get("type") == "json_invalid":
        # pydantic's parser also refuses JSON that the json module takes (an escaped lone surrogate):
        # parse it that way, so that the text check names the bad input as it does elsewhere. Not
        # JSON nested too deeply for pydantic (depth 200): the json module would recurse into it.
        if "recursion limit" in str(errors[0].get("msg", "")):
            raise ApiError(400, "The request body is not valid JSON: it is nested too deeply.", code="invalid_json")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise _validation_error(errors) from None
        try:
            return EmbeddingRequest.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
    raise _validation_error(errors)


#: The client that sends token ids by default is LangChain's OpenAIEmbeddings: the answer names its switch.
TOKEN_IDS_REFUSED = (
    "Token-id arrays are not supported by this server: send the input as a string or a list of strings. "
    "LangChain's OpenAIEmbeddings sends token ids unless told not to: "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False)."
)


def _texts(body: EmbeddingRequest) -> list[str]:
    """The texts of ``input``: one string or a list of them (the serving core checks them)."""
    raw = body.input
    if isinstance(raw, str):
        return [raw]
    if raw and not all(isinstance(t, str) for t in raw):
        raise ApiError(400, TOKEN_IDS_REFUSED, param="input", code="token_ids_not_supported")
    return list(raw)  # type: ignore[arg-type]


def _resolve(manager: EmbeddingGeneratorManager, model: str) -> str:
    try:
        return resolve_model(manager, model, WORDS)
    except ServeError as exc:  # a path parameter, not a body field: no param
        raise ApiError(_STATUS[exc.reason], exc.message, code=exc.code) from None


def _validation_error(errors: Any) -> ApiError:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return ApiError(400, "The request body is not valid JSON.", code="invalid_json")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = loc[0] if loc else None
    if field == "input":
        message = "'input' must be a string or a list of strings."
    elif first.get("type") == "missing":
        message = f"'{field}' is required." if field else "A JSON request body is required."
    else:
        shown = ".".join(loc) or "body"
        message = f"'{shown}': {first.get('msg', 'invalid value')}."
    return ApiError(400, message, param=field)
