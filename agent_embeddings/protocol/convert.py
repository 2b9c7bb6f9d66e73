"""Conversion between AIOS protobuf messages and the SDK's types, for client and server alike.

Vectors cross the wire as one packed little-endian float32 matrix (``vectors`` bytes plus
``rows`` and ``cols``); both sides convert with :func:`~agent_embeddings.vectors.to_float32_bytes`
and :func:`~agent_embeddings.vectors.from_float32_bytes`, never float by float. gRPC status
codes map to the SDK's exceptions in both directions here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from ..errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    ConfigurationError,
    EmbeddingContractError,
    InvalidInputError,
    RateLimitError,
    RemoteNotFoundError,
)
from ..results import GeneratorInfo
from ..space import SpaceIdentity, identity_from
from ..vectors import InputType, from_float32_bytes, to_float32_bytes
from .gen.aios.embeddings.v1 import embeddings_pb2 as pb

__all__ = [
    "EmbedCall",
    "EmbedResult",
    "ServedModel",
    "ServerInfo",
    "embed_request",
    "embed_response",
    "error_from_rpc",
    "info_from_response",
    "info_response",
    "parse_embed_request",
    "parse_embed_response",
    "pb",
    "request_size",
    "response_size",
    "status_for_error",
]

# Bytes a field adds around its payload at most: a tag and a length varint. Used to size
# batches without serializing them.
_FIELD_OVERHEAD = 6
# Fixed part of an EmbedResponse/EmbedRequest besides inputs and vectors (names, usage,
# timing, request id), generously rounded up.
_MESSAGE_OVERHEAD = 1024


# -- domain types -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbedCall:
    """An Embed request as the server handles it."""

    model: str
    texts: list[str]
    normalize: bool | None = None
    dimensions: int | None = None
    request_id: str = ""
    selection: dict[str, str] = field(default_factory=dict)
    input_type: InputType | None = None


@dataclass(frozen=True)
class EmbedResult:
    """An Embed response as the client uses it."""

    vectors: np.ndarray
    prompt_tokens: int | None
    model: str
    normalized: bool
    request_id: str
    total_us: int = 0
    inference_us: int = 0


@dataclass(frozen=True)
class ServedModel:
    """One model a server announces in Info."""

    name: str
    aliases: tuple[str, ...] = ()
    provider: str = ""
    model_id: str = ""
    dims: int | None = None
    normalize: bool = False
    #: the space the server publishes for this model (None: it publishes none)
    space: SpaceIdentity | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class ServerInfo:
    """A server's models and limits (the Info answer)."""

    models: tuple[ServedModel, ...]
    max_inputs_per_request: int
    max_message_bytes: int
    max_concurrency: int = 0
    server_version: str = ""

    def find(self, name: str) -> ServedModel | None:
        for model in self.models:
            if name in model.names:
                return model
        return None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


# -- Embed --------------------------------------------------------------------------------------
def selection_map(query: Mapping[str, Any] | None) -> dict[str, str]:
    """``llm_selection_query`` as the wire's string map; non-string values are JSON-encoded."""
    out: dict[str, str] = {}
    for key, value in (query or {}).items():
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def embed_request(
    model: str,
    texts: Sequence[str],
    *,
    normalize: bool | None = None,
    dimensions: int | None = None,
    request_id: str = "",
    selection: Mapping[str, str] | None = None,
    input_type: InputType | None = None,
) -> pb.EmbedRequest:
    request = pb.EmbedRequest(model=model, inputs=texts, request_id=request_id, selection=selection or {})
    if input_type is not None:
        request.input_type = _WIRE_INPUT_TYPE[input_type]
    if normalize is not None:
        request.normalize = normalize
    if dimensions is not None:
        request.dimensions = dimensions
    return request


def parse_embed_request(request: pb.EmbedRequest) -> EmbedCall:
    """The request's fields, those only the wire has checked (truncation, dimensions, input type);
    raise InvalidInputError. The texts are checked by the server's serving core, with its limits."""
    if request.truncation not in (pb.TRUNCATION_UNSPECIFIED, pb.TRUNCATION_END):
        name = pb.Truncation.Name(request.truncation) if request.truncation in pb.Truncation.values() else "?"
        raise InvalidInputError(
            f"truncation {name} ({request.truncation}) is not supported; use TRUNCATION_END or leave it unset"
        )
    dimensions = request.dimensions if request.HasField("dimensions") else None
    if dimensions == 0:
        raise InvalidInputError("dimensions must be positive when set")
    return EmbedCall(
        model=request.model,
        texts=list(request.inputs),
        normalize=request.normalize if request.HasField("normalize") else None,
        dimensions=dimensions,
        request_id=request.request_id,
        selection=dict(request.selection),
        input_type=_input_type(request.input_type),
    )


_WIRE_INPUT_TYPE: dict[str, Any] = {"query": pb.INPUT_TYPE_QUERY, "document": pb.INPUT_TYPE_DOCUMENT}


def _input_type(wire: int) -> InputType | None:
    if wire == pb.INPUT_TYPE_UNSPECIFIED:
        return None
    for name, value in _WIRE_INPUT_TYPE.items():
        if value == wire:
            return name  # type: ignore[return-value]
    raise InvalidInputError(f"input_type {wire} is not one of INPUT_TYPE_QUERY, INPUT_TYPE_DOCUMENT or unset")


def embed_response(
    vectors: np.ndarray,
    *,
    model: str,
    normalized: bool,
    prompt_tokens: int | None,
    request_id: str,
    total_us: int,
    inference_us: int,
) -> pb.EmbedResponse:
    rows, cols = vectors.shape
    usage = pb.Usage()
    if prompt_tokens is not None:
        usage.prompt_tokens = prompt_tokens
    return pb.EmbedResponse(
        vectors=to_float32_bytes(vectors),
        rows=rows,
        cols=cols,
        model=model,
        normalized=normalized,
        usage=usage,
        timing=pb.Timing(total_us=total_us, inference_us=inference_us),
        request_id=request_id,
    )


def parse_embed_response(response: pb.EmbedResponse, expected_rows: int, *, who: str) -> EmbedResult:
    if response.rows != expected_rows:
        raise EmbeddingContractError(f"{who}: server returned {response.rows} vectors for {expected_rows} inputs")
    try:
        matrix = from_float32_bytes(response.vectors, response.rows, response.cols)
    except EmbeddingContractError as exc:
        raise EmbeddingContractError(f"{who}: {exc}") from None
    usage = response.usage
    return EmbedResult(
        vectors=matrix,
        prompt_tokens=usage.prompt_tokens if usage.HasField("prompt_tokens") else None,
        model=response.model,
        normalized=response.normalized,
        request_id=response.request_id,
        total_us=response.timing.total_us,
        inference_us=response.timing.inference_us,
    )


def request_size(text_bytes: int, count: int) -> int:
    """Upper bound of an EmbedRequest's size carrying ``count`` texts of ``text_bytes`` UTF-8 bytes."""
    return _MESSAGE_OVERHEAD + text_bytes + count * _FIELD_OVERHEAD


def response_size(rows: int, cols: int) -> int:
    """Upper bound of an EmbedResponse's size for a ``rows`` x ``cols`` matrix."""
    return _MESSAGE_OVERHEAD + rows * cols * 4


# -- Info ---------------------------------------------------------------------------------------
def info_response(
    models: Sequence[GeneratorInfo],
    *,
    max_inputs: int,
    max_message_bytes: int,
    max_concurrency: int,
    server_version: str,
) -> pb.InfoResponse:
    out = pb.InfoResponse(
        max_inputs_per_request=max_inputs,
        max_message_bytes=max_message_bytes,
        max_concurrency=max_concurrency,
        server_version=server_version,
    )
    for info in models:
        item = out.models.add(
            name=info.name,
            aliases=list(info.aliases),
            provider=info.provider,
            model_id=info.model or "",
            normalize=info.normalize,
        )
        if info.width:
            item.dims = info.width
        if info.space is not None:
            item.space.CopyFrom(space_message(info.space))
    return out


def space_message(space: SpaceIdentity) -> pb.EmbeddingSpace:
    """A :class:`SpaceIdentity` as the wire's ``EmbeddingSpace`` (unknown fields left unset)."""
    fields = {k: v for k, v in space.model_dump().items() if v is not None}
    return pb.EmbeddingSpace(id=space.space_id, **fields)


def space_from_message(message: pb.EmbeddingSpace) -> SpaceIdentity | None:
    """The identity an ``EmbeddingSpace`` publishes; None when unset (an older server) or unusable."""
    if not message.model:
        return None
    fields = {name: getattr(message, name) for name in SpaceIdentity.model_fields
              if name in ("model", "normalize") or message.HasField(name)}
    return identity_from(fields)


def info_from_response(response: pb.InfoResponse) -> ServerInfo:
    models = tuple(
        ServedModel(
            name=m.name,
            aliases=tuple(m.aliases),
            provider=m.provider,
            model_id=m.model_id,
            dims=m.dims if m.HasField("dims") else None,
            normalize=m.normalize,
            space=space_from_message(m.space) if m.HasField("space") else None,
        )
        for m in response.models
    )
    return ServerInfo(
        models=models,
        max_inputs_per_request=response.max_inputs_per_request,
        max_message_bytes=response.max_message_bytes,
        max_concurrency=response.max_concurrency,
        server_version=response.server_version,
    )


# -- status codes <-> SDK errors ----------------------------------------------------------------
_ERROR_FOR_CODE: dict[grpc.StatusCode, type[BackendError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: BackendTimeoutError,
    grpc.StatusCode.UNAVAILABLE: BackendUnavailableError,
    grpc.StatusCode.INVALID_ARGUMENT: BadRequestError,
    grpc.StatusCode.OUT_OF_RANGE: BadRequestError,
    grpc.StatusCode.FAILED_PRECONDITION: BadRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.NOT_FOUND: RemoteNotFoundError,
}

_HINT = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "no answer within the deadline",
    grpc.StatusCode.UNAVAILABLE: "server unavailable",
    grpc.StatusCode.UNAUTHENTICATED: "credentials rejected (check api_key_ref)",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "server overloaded or request over its limits",
}


def error_from_rpc(exc: grpc.RpcError, *, who: str, target: str, timeout_s: float) -> BackendError:
    """The SDK error for a failed call, naming the target and the deadline (never metadata)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    cls = _ERROR_FOR_CODE.get(code, BackendUnavailableError if code == grpc.StatusCode.UNKNOWN else BackendError)
    hint = _HINT.get(code)
    prefix = f"{who}: gRPC target {target!r} (deadline {timeout_s:g}s)"
    text = f"{prefix}: {code.name}" + (f", {hint}" if hint else "") + (f": {details}" if details else "")
    return cls(text)


def status_for_error(exc: BaseException, *, model: str, request_id: str) -> tuple[grpc.StatusCode, str]:
    """The status and message a server answers when the backend of ``model`` failed a call.

    The message is generic, with ``request_id``: the exception's own text may name internal
    hosts and quote the upstream's answer, so it goes to the server's (redacted) log beside the
    same id, never to the caller. The status tells the caller what to do: ``UNAVAILABLE`` (the
    ``aios:`` client's channel retries it) and ``RESOURCE_EXHAUSTED`` are worth a retry,
    ``INTERNAL`` (the server's own credentials or set-up, a broken contract) is not. Errors
    about the caller's own request (bad input, unknown model) are answered by the server with
    their message before any backend is called.
    """
    where = f"(request id {request_id}; details in the server log)"
    if isinstance(exc, (InvalidInputError, BadRequestError)):
        return grpc.StatusCode.INVALID_ARGUMENT, f"the backend of model {model!r} refused the input {where}"
    if isinstance(exc, RateLimitError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"the backend of model {model!r} is rate limited; retry shortly {where}"
    if isinstance(exc, BackendTimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"the backend of model {model!r} did not answer in time {where}"
    if isinstance(exc, (BackendUnavailableError, ConfigurationError)):
        return grpc.StatusCode.UNAVAILABLE, f"the backend of model {model!r} is unavailable; retry shortly {where}"
    # AuthenticationError (the upstream refused *this server's* credentials: not the caller's
    # problem), RemoteNotFoundError (the server's upstream lacks its model), a broken contract, a bug.
    return grpc.StatusCode.INTERNAL, f"the backend of model {model!r} failed {where}"
