"""``openai:`` — OpenAI and every OpenAI-compatible endpoint (vLLM, TEI, infinity, Ollama, ours).

Built on the official ``openai`` client: one sync and one async client per generator, reused
for every call. Retries (408/409/429/5xx and connection errors, honouring ``Retry-After``) are
the SDK's shared loop, not the client's, so that ``retry.deadline_s`` bounds a call with all its
tries: each request gets ``timeout`` or what is left of the deadline, whichever is less, as a
bound on the whole request (``http_deadline.py``: httpx's timeouts bound each socket read).
Requests ask for ``encoding_format="base64"`` (packed float32) and are decoded with numpy.
Batches are split to the API's limits (2,048 inputs, 300,000 tokens per request, 8,192 tokens
per input for OpenAI models, counted with tiktoken); results are placed by ``index``.

Keys: ``api_key`` (constructor) or ``api_key_ref`` (``env:NAME`` / ``file:PATH``); a literal
``api_key`` in a spec works but warns. When the spec gives no ``base_url``, ``OPENAI_API_KEY``
(and ``OPENAI_BASE_URL``) are used, as by the official client; an explicit ``base_url`` never
receives ``OPENAI_API_KEY`` implicitly, so a key meant for OpenAI is not sent elsewhere. A key
is required at build time unless the endpoint is on loopback or ``api_key_required`` is false.
The key, the ``base_url`` (it may carry credentials) and the ``default_headers`` values live in
clear in the clients only; everything else shows the URL through ``display_url``.

``openai`` and ``tiktoken`` are imported when a generator is built, never at package import.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt

from .._deps import require
from ..base import AbstractEmbeddingGenerator
from ..errors import (
    BackendError,
    ConfigurationError,
    InvalidInputError,
)
from ..flow import Flow, Step, arun, run
from ..hookspecs import hookimpl
from ..redaction import redact
from ..results import BackendResult
from ..retry import RetryPolicy, remaining
from ..secrets import SecretHeaders
from ..space import SpaceIdentity, identity_from, remote_space
from ..vectors import InputType
from .http_deadline import keep_request_deadline, request_deadline
from .openai_errors import safe_cause, translate_error
from .openai_response import decode_embeddings
from .openai_tokens import MAX_TOKENS_PER_INPUT, Tokenizer, make_tokenizer
from .remote import Endpoint, PerLoop, RemoteParams, default_tls, resolve_api_key

__all__ = ["OpenAIEmbeddingGenerator", "OpenAIParams"]

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "text-embedding-3-small"
MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000
Truncate = Literal["end", "start", "error"]
_UNASKED = object()
TokenizerChoice = Literal["auto", "tiktoken", "estimate"]


class OpenAIParams(RemoteParams):
    """``llm_parameters`` of ``openai:`` items."""

    model: str | None = Field(default=None, description="Model name sent to the API (default: the block id's model).")
    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("base_url", "api_base"),
        description="Endpoint, e.g. http://vllm:8000/v1 (also accepted as 'api_base'; default: OpenAI).",
    )
    organization: str | None = Field(default=None, description="OpenAI organization id.")
    project: str | None = Field(default=None, description="OpenAI project id.")
    timeout_s: PositiveFloat = Field(
        default=60.0, validation_alias=AliasChoices("timeout_s", "timeout"),
        description="Seconds per HTTP request attempt (also accepted as 'timeout').",
    )
    max_retries: int = Field(default=2, ge=0, description="Retries on 408/409/429/5xx and connection errors.")
    batch_size: PositiveInt = Field(default=MAX_INPUTS_PER_REQUEST, description="Texts per request (at most max_inputs_per_request).")
    max_inputs_per_request: PositiveInt = Field(default=MAX_INPUTS_PER_REQUEST, description="Endpoint's limit of inputs per request.")
    max_tokens_per_request: PositiveInt | None = Field(
        default=MAX_TOKENS_PER_REQUEST, description="Endpoint's limit of tokens summed over a request (null: none)."
    )
    max_tokens_per_input: PositiveInt | None = Field(
        default=None, description="Tokens per input (default: 8192 for OpenAI models, no limit for other models)."
    )
    truncate: Truncate = Field(
        default="end", description="Over-long inputs: 'end' drops their end, 'start' their start, 'error' rejects them."
    )
    tokenizer: TokenizerChoice = Field(
        default="auto", description="'tiktoken' (exact, OpenAI models), 'estimate' (conservative), 'auto' (pick)."
    )
    tiktoken_encoding: str | None = Field(default=None, description="tiktoken encoding name (default: by model).")
    send_dimensions: bool | None = Field(
        default=None,
        description="Send 'dimensions' to the endpoint (default: yes except text-embedding-ada-002); "
        "otherwise vectors are shortened here.",
    )
    default_headers: SecretHeaders = Field(
        default_factory=dict,
        description="Extra HTTP headers on every request (values are treated as secrets: masked wherever shown).",
    )
    input_type_field: str | None = Field(
        default=None, min_length=1,
        description='Send input_type ("query"/"document") as this extra body field, for compatible servers that '
        'take one (e.g. "input_type"); by default it is not sent: OpenAI\'s API has no such field.',
    )


class OpenAIEmbeddingGenerator(AbstractEmbeddingGenerator):
    """Embeddings from OpenAI or any OpenAI-compatible endpoint.

    >>> gen = OpenAIEmbeddingGenerator(api_key="sk-...", model="text-embedding-3-small", normalize=True)
    >>> gen.generate("What is AI?")[:3]  # doctest: +SKIP
    >>> local = OpenAIEmbeddingGenerator(model="BAAI/bge-m3", base_url="http://127.0.0.1:8000/v1")
    """

    provider = "openai"
    Params = OpenAIParams
    takes_input_type = True  # sent as input_type_field, when set

    params: OpenAIParams

    def __init__(
        self, params: OpenAIParams | None = None, *, model: str | None = None, name: str | None = None, **options: Any
    ) -> None:
        """``OpenAIEmbeddingGenerator(model="text-embedding-3-small", api_key_ref="env:KEY")``: keyword
        options are :class:`OpenAIParams` fields, validated once (or pass ``params`` whole);
        ``model`` is the block id's model, used when the parameters name none."""
        who = f"openai generator {name or options.get('model') or model or DEFAULT_MODEL!r}"
        if options.get("base_url") and options.get("api_base") and options["base_url"] != options["api_base"]:
            raise ConfigurationError(f"{who}: base_url and api_base differ; give one of them")
        if options.get("api_base") and not options.get("base_url"):
            options["base_url"] = options["api_base"]
        options.pop("api_base", None)
        params = self.options(params, options, who=who)
        if params.model is None:
            params = params.model_copy(update={"model": model or DEFAULT_MODEL})
        super().__init__(params, model=params.model, name=name)
        explicit_url = params.base_url
        # The URL as given (it may carry credentials) goes to the clients only; everything else shows it masked.
        self._endpoint = Endpoint(explicit_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL)
        self.base_url = self.endpoint = self._endpoint.shown
        if params.retry is None:
            # Without a spec ``retry``: max_retries retries, and a deadline that leaves every try
            # its full timeout plus the backoff between tries.
            attempts = min(10, params.max_retries + 1)
            deadline = min(3600.0, attempts * params.timeout_s + (attempts - 1) * 2.0)
            self.retry = RetryPolicy(attempts=attempts, deadline_s=deadline)
        self.send_dimensions = (
            params.send_dimensions if params.send_dimensions is not None else params.model != "text-embedding-ada-002"
        )
        self._tokenizer: Tokenizer | None = None
        self._tokenizer_lock = threading.Lock()
        self._api_key = resolve_api_key(
            params, who=self._who(), endpoint=self.endpoint, env_var=None if explicit_url else "OPENAI_API_KEY",
            hint="give llm_parameters.api_key_ref ('env:NAME' or 'file:PATH'; OPENAI_API_KEY is only used "
            "when no base_url is given), or set api_key_required=false if the endpoint needs no key"
            if explicit_url else "set OPENAI_API_KEY, or give llm_parameters.api_key_ref ('env:NAME' or 'file:PATH')",
        )

        openai = require("openai", "openai", who=self._who())
        # What every client of this generator is made with, secrets aside: the key, the URL and the
        # header values stay SecretStr here and are handed to each client as it is made (_new_client).
        self._client_options: dict[str, Any] = {
            "organization": params.organization,
            "project": params.project,
            "timeout": params.timeout_s,
            # The shared retry loop retries: the client's own retries would give every attempt a
            # full timeout and overrun the call's deadline.
            "max_retries": 0,
        }
        # A keyless endpoint: send no Authorization header (newer clients insist on being told so).
        self._extra_headers: dict[str, Any] | None = None
        if self._api_key is None:
            if "_enforce_credentials" in inspect.signature(openai.OpenAI.__init__).parameters:
                self._client_options["_enforce_credentials"] = False
            if hasattr(openai, "Omit"):
                self._extra_headers = {"Authorization": openai.Omit()}
        transport = params.http_transport
        # The sync client's sockets keep each request's deadline (http_deadline.py); the async
        # path bounds requests with asyncio.timeout (_apost). An injected transport is used as it is.
        # Every client shares one TLS context (remote.default_tls): an AsyncOpenAI is made per event loop.
        sync_http = openai.DefaultHttpxClient(transport=transport) if transport else keep_request_deadline(
            openai.DefaultHttpxClient(verify=default_tls(openai.DefaultHttpxClient))
        )
        self._client = self._new_client(openai.OpenAI, http_client=sync_http)
        self._published: Any = _UNASKED  # the endpoint's space: not asked yet, None (none) or an identity
        self._space_lock = threading.Lock()
        self._aclients: PerLoop[Any] = PerLoop(lambda: self._new_client(openai.AsyncOpenAI, http_client=(
            openai.DefaultAsyncHttpxClient(transport=transport) if transport
            else openai.DefaultAsyncHttpxClient(verify=default_tls(openai.DefaultAsyncHttpxClient))
        )))

    def _new_client(self, cls: Any, **extra: Any) -> Any:
        """An ``openai.OpenAI``/``AsyncOpenAI``: the only objects that hold the key, URL and headers in clear."""
        import openai

        headers = {name: value.get_secret_value() for name, value in self.params.default_headers.items()}
        # A query in base_url (?api-version=..., ?token=...) goes on every request: the client
        # would append the path after it ("/v1?token=x" + "/embeddings").
        url, query = self._endpoint.parts()
        try:
            return cls(
                api_key=self._api_key.get_secret_value() if self._api_key is not None else "",
                base_url=url,
                default_headers=headers or None,
                default_query=query or None,
                **self._client_options,
                **extra,
            )
        except openai.OpenAIError as exc:
            raise ConfigurationError(
                f"{self._who()}: cannot configure the client for {self.endpoint}: {redact(str(exc))}"
            ) from None

    @property
    def timeout(self) -> float:
        """Seconds one request may take (``timeout_s``; less when the call's retry deadline is nearer)."""
        return self.params.timeout_s

    timeout_s = timeout

    @property
    def max_retries(self) -> int:
        """Retries after the first try (the retry policy's ``attempts - 1``)."""
        return self.retry.attempts - 1

    # -- token limits ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        """How tokens are counted for the limits (tiktoken for OpenAI models, else an estimate)."""
        if self._tokenizer is None:
            with self._tokenizer_lock:
                if self._tokenizer is None:
                    self._tokenizer = make_tokenizer(
                        self.model or "", self.params.tokenizer, self.params.tiktoken_encoding, who=self._who()
                    )
        return self._tokenizer

    @property
    def max_tokens_per_input(self) -> int | None:
        if self.params.max_tokens_per_input is not None:
            return self.params.max_tokens_per_input
        return MAX_TOKENS_PER_INPUT if self.tokenizer.openai_model else None

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        tok = self.tokenizer
        return sum(tok.count(list(texts))) if tok.exact else None

    def _chunk_size(self) -> int:
        # Requests are cut to the endpoint's limits in _plan(); hand over everything at once.
        return 1 << 62

    def _plan(self, texts: list[str]) -> tuple[list[list[str]], list[int] | None]:
        """Truncate or reject over-long inputs, then cut into requests within the limits."""
        tok = self.tokenizer
        counts = tok.count(texts)
        limit = self.max_tokens_per_input
        if limit is not None:
            for i, n in enumerate(counts):
                if n > limit:
                    if self.params.truncate == "error":
                        raise InvalidInputError(
                            f"{self._who()}: texts[{i}] has {n} tokens{'' if tok.exact else ' (estimated)'}, "
                            f"over the limit of {limit} per input; shorten it or set truncate='end'"
                        )
                    texts[i], counts[i] = tok.truncate(texts[i], limit, from_start=self.params.truncate == "start")
        per_request = max(1, min(self.batch_size, self.params.max_inputs_per_request))
        budget = self.params.max_tokens_per_request
        requests: list[list[str]] = []
        current: list[str] = []
        used = 0
        for text, n in zip(texts, counts):
            if current and (len(current) >= per_request or (budget is not None and used + n > budget)):
                requests.append(current)
                current, used = [], 0
            current.append(text)
            used += n
        if current:
            requests.append(current)
        return requests, (counts if tok.exact else None)

    # -- the backend call --------------------------------------------------------------------
    def _embed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> BackendResult:
        return run(self._requests(texts, input_type))

    async def _aembed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> BackendResult:
        return await arun(self._requests(texts, input_type))

    def _requests(self, texts: list[str], input_type: InputType | None) -> Flow[BackendResult]:
        """The requests of one backend call, sync and async alike (:mod:`..flow`): planned, sent,
        their errors translated, decoded and combined."""
        requests, counts = self._plan(list(texts))
        parts = []
        for batch in requests:
            timeout = self._attempt_timeout()
            args = self._request_args(batch, timeout, input_type)
            try:
                content = yield Step(partial(self._post, args, timeout), partial(self._apost, args, timeout))
            except Exception as exc:
                error, cause = self._translate(exc, timeout), safe_cause(exc)
                if cause is not None:
                    raise error from cause
            else:
                parts.append(self._decode(content, len(batch)))
                continue
            raise error  # outside the except block: an answer that echoed the key is not kept as context
        return self._combine(parts, counts)

    def input_signature(self, input_type: InputType | None) -> str | None:
        """``input_type`` changes the vectors only where it is sent (``input_type_field``)."""
        return input_type if self.params.input_type_field else None

    # -- the embedding space -------------------------------------------------------------------
    def space(self) -> SpaceIdentity:
        """The endpoint's published space (``GET /models/{model}``'s ``space``, as our server answers),
        after what this client changes; for an endpoint that publishes none (OpenAI itself, most
        peers), the model name and the declared settings: the probes decide."""
        published = self._published_space()
        if published is None:
            return self._declared_space()
        return remote_space(
            published, normalize=self.normalize, dimensions=self.dimensions,
            sends_input_type=bool(self.params.input_type_field), server_normalizes=True,
        )

    def known_space(self) -> SpaceIdentity | None:
        return self.space() if self._published is not _UNASKED else None

    def cache_scope(self) -> str | None:
        # A space known by model name alone does not pin the vectors down: keep endpoints apart.
        return None if self._published not in (None, _UNASKED) else self.endpoint

    def _published_space(self) -> SpaceIdentity | None:
        """Ask the endpoint once; an endpoint without the extension answers a status (or a card
        without ``space``) and is remembered as publishing none. A connection failure is raised
        and asked again next time."""
        if self._published is _UNASKED:
            with self._space_lock:
                if self._published is _UNASKED:
                    self._published = self._fetch_space()
        published: SpaceIdentity | None = self._published
        return published

    def _fetch_space(self) -> SpaceIdentity | None:
        import openai

        try:
            raw = self._client.models.with_raw_response.retrieve(
                self.model, timeout=self.timeout, **({"extra_headers": self._extra_headers} if self._extra_headers else {})
            )
            card = json.loads(raw.http_response.content)
        except openai.APIStatusError:
            return None
        except (ValueError, UnicodeDecodeError):
            return None
        except Exception as exc:
            raise self._translate(exc, self.timeout) from None
        published = identity_from(card.get("space") if isinstance(card, dict) else None)
        if published is not None:
            log.info("%s takes the embedding space %s published by %s", self._who(), published.space_id, self.endpoint)
        return published

    def warm_up(self) -> None:
        self.tokenizer  # noqa: B018 - loads the BPE ranks now rather than on the first call
        try:
            self._published_space()
        except BackendError as exc:  # the first call will say it again, with retries
            log.warning("%s: cannot ask %s for its embedding space yet: %s", self._who(), self.endpoint, exc)

    def _attempt_timeout(self) -> float:
        """This request's timeout: ``timeout``, or less when the call's retry deadline is nearer."""
        left = remaining()
        return self.timeout if left is None else max(0.001, min(self.timeout, left))

    def _request_args(self, batch: list[str], timeout: float, input_type: InputType | None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "input": batch, "model": self.model, "encoding_format": "base64", "timeout": timeout,
        }
        if self.dimensions is not None and self.send_dimensions:
            args["dimensions"] = self.dimensions
        if self._extra_headers:
            args["extra_headers"] = self._extra_headers
        if input_type is not None and self.params.input_type_field:  # e.g. {"input_type": "query"}
            args["extra_body"] = {self.params.input_type_field: input_type}
        return args

    def _post(self, args: dict[str, Any], timeout: float) -> bytes:
        with request_deadline(timeout):  # the whole request, not each socket read (a trickling server)
            raw = self._client.embeddings.with_raw_response.create(**args)
            content: bytes = raw.http_response.content
        return content

    async def _apost(self, args: dict[str, Any], timeout: float) -> bytes:
        # The whole request, not each socket read (a trickling server), from before this loop's
        # client is made: a call's deadline counts that CPU time too.
        async with asyncio.timeout(timeout):
            raw = await self._async_client().embeddings.with_raw_response.create(**args)
            content: bytes = raw.http_response.content
        return content

    def _async_client(self) -> Any:
        return self._aclients.get()  # one per event loop: an httpx pool cannot move between loops

    def _combine(self, parts: list[tuple[np.ndarray, int | None]], counts: list[int] | None) -> BackendResult:
        matrix = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        reported = [p[1] for p in parts]
        if all(r is not None for r in reported):
            tokens: int | None = sum(reported)  # type: ignore[arg-type]
        else:  # the endpoint did not report usage: our exact count, if we have one
            tokens = sum(counts) if counts is not None else None
        return BackendResult(matrix, tokens)

    def _decode(self, content: bytes, rows: int) -> tuple[np.ndarray, int | None]:
        return decode_embeddings(content, rows, where=f"{self._who()} at {self.endpoint}")

    # -- errors ------------------------------------------------------------------------------
    def _translate(self, exc: Exception, timeout: float) -> Exception:
        return translate_error(exc, where=f"{self._who()} at {self.endpoint}", model=self.model, timeout=timeout)

    # -- life cycle --------------------------------------------------------------------------
    def check(self, timeout_s: float = 10.0) -> str:
        """The endpoint answers ``GET /models`` within ``timeout_s``, accepts the key, lists the model."""
        from .openai_check import check_endpoint

        return check_endpoint(self, min(self.timeout, timeout_s))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.endpoint}

    def close(self) -> None:
        super().close()  # micro-batcher and cache, when configured
        self._client.close()
        self._aclients.drain()  # their connections close with their event loop


@hookimpl
def register_embedding_backends(register: Any) -> None:
    register("openai", OpenAIEmbeddingGenerator.from_model_item)

