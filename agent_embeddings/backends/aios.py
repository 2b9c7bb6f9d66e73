"""``aios:`` — a remote embedding block served over gRPC (the AIOS protocol).

>>> gen = AIOSEmbeddingGenerator(grpc_url="dns:///embeddings.example.com:9000", dims=768, timeout_s=15,
...                      normalize=True)                                           # doctest: +SKIP
>>> gen.generate("What is AI?")                                                    # doctest: +SKIP

grpc is imported on first use, never when this module is imported (plugin loading imports it
for every spec). One channel per target is created lazily and reused: a sync channel for the
sync API, and one ``grpc.aio`` channel per event loop for the async API; ``close()`` (or the
context manager) closes them.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt

from .._deps import require
from ..base import AbstractEmbeddingGenerator
from ..errors import BackendError, ConfigurationError, DimensionMismatchError, InvalidInputError, RemoteNotFoundError
from ..flow import Flow, Step, arun, run
from ..hookspecs import hookimpl
from ..results import BackendResult
from ..retry import RetryPolicy
from ..space import SpaceIdentity, remote_space
from ..vectors import InputType
from .remote import PerLoop, RemoteParams, resolve_api_key

if TYPE_CHECKING:
    from ..protocol.convert import ServedModel, ServerInfo

__all__ = ["AIOSEmbeddingGenerator", "AIOSEmbeddings", "AIOSParams"]

# The server's message limit when it announces none (gRPC's default).
_DEFAULT_MESSAGE_BYTES = 4 * 1024 * 1024
# Vector width assumed for sizing responses before the server has told it.
_UNKNOWN_WIDTH = 4096


class AIOSParams(RemoteParams):
    """``llm_parameters`` of ``aios:`` items."""

    grpc_url: str = Field(
        description="gRPC target: 'host:port', 'dns:///host:port', 'unix:/path' or 'ipv4:a:port,b:port' (replicas)."
    )
    timeout_s: PositiveFloat = Field(default=30.0, description="Deadline of each gRPC call, in seconds.")
    batch_size: PositiveInt = Field(
        default=64, description="Most texts per request (the server's own limit applies too)."
    )
    plaintext: bool | None = Field(
        default=None,
        description="Use an unencrypted connection. Default: plain text on loopback and unix sockets, TLS elsewhere.",
    )
    tls_ca_file: str | None = Field(default=None, description="PEM file of the CA to trust (default: system roots).")
    tls_client_cert_file: str | None = Field(default=None, description="PEM client certificate (mutual TLS).")
    tls_client_key_file: str | None = Field(default=None, description="PEM key of the client certificate.")
    tls_server_name: str | None = Field(
        default=None, description="Name to verify the server's certificate against (default: the target's host)."
    )
    max_concurrent_requests: PositiveInt = Field(
        default=4, description="Requests of one large batch in flight at once (spread over replicas)."
    )


class AIOSEmbeddingGenerator(AbstractEmbeddingGenerator):
    """Embeddings from an AIOS block reached over gRPC.

    ``model`` names the served block (``aios:embeddings-prod`` asks for ``embeddings-prod``);
    without it the server's only model is used. Batches larger than the server accepts are
    split into several requests (up to ``max_concurrent_requests`` in flight) and reassembled
    in order.
    """

    provider = "aios"
    Params = AIOSParams
    takes_input_type = True  # a field of the request
    native_retries = True  # gRPC's retry policy, set on the channel (protocol/target.py)
    #: the spec's ``retry``, mapped onto gRPC's retry policy (None: gRPC's default retries)
    _retry_policy: RetryPolicy | None = None

    params: AIOSParams

    def __init__(
        self, params: AIOSParams | None = None, *, model: str | None = None, name: str | None = None, **options: Any
    ) -> None:
        """``AIOSEmbeddingGenerator(grpc_url="dns:///host:9000", dims=768, timeout_s=15)``: keyword options are
        :class:`AIOSParams` fields, validated once (or pass ``params`` whole). ``api_key`` (a literal
        bearer token) and ``selection_query`` are for code; specs use ``api_key_ref`` and the item's
        ``llm_selection_query``."""
        from ..protocol.target import parse_target  # no grpc import

        selection_query = options.pop("selection_query", None)
        params = self.options(params, options, who=f"aios generator {name or model or options.get('grpc_url')!r}")
        super().__init__(params, model=model, name=name)
        self.target = parse_target(params.grpc_url)
        self.grpc_url = self.target.target
        tls_files = (params.tls_ca_file, params.tls_client_cert_file, params.tls_client_key_file)
        if params.plaintext and any(tls_files):
            raise ConfigurationError(f"{self._who()}: plaintext=true contradicts the tls_* files; choose one")
        if bool(params.tls_client_cert_file) != bool(params.tls_client_key_file):
            raise ConfigurationError(f"{self._who()}: give both tls_client_cert_file and tls_client_key_file")
        # Plain text only when asked, or when the target never leaves this machine.
        local = self.target.is_local and not any(tls_files)
        self.plaintext = params.plaintext if params.plaintext is not None else local
        self.selection_query = dict(selection_query or {})
        # Resolved and checked now, when the spec loads, not on the first call; optional unless asked.
        self._api_key = resolve_api_key(params, who=self._who(), endpoint=self.grpc_url, required_default=False)
        self._lock = threading.Lock()
        self._channel: Any = None
        self._stub: Any = None
        # A grpc.aio channel belongs to the event loop it was made in.
        self._aio: PerLoop[tuple[Any, Any]] = PerLoop(lambda: self._new_channel(aio=True))
        self._info: ServerInfo | None = None
        self._served: ServedModel | None = None

    def configure_retry(self, policy: Any) -> None:
        """Map the spec's ``retry`` onto gRPC's retry policy; its deadline caps ``timeout_s``."""
        super().configure_retry(policy)
        self._retry_policy = policy

    @property
    def timeout_s(self) -> float:
        """The deadline of each call: ``timeout_s``, or the retry policy's deadline when shorter."""
        policy = self._retry_policy
        return self.params.timeout_s if policy is None else min(self.params.timeout_s, policy.deadline_s)

    # -- channels --------------------------------------------------------------------------
    def _grpc(self) -> Any:
        return require("grpc", "aios", who=self._who())

    def _credentials(self) -> Any:
        grpc = self._grpc()
        if self.plaintext:
            return None

        def read(path: str | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).expanduser().read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"{self._who()}: cannot read {what} {path!r}: {exc.strerror}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.params.tls_ca_file, "tls_ca_file"),
            private_key=read(self.params.tls_client_key_file, "tls_client_key_file"),
            certificate_chain=read(self.params.tls_client_cert_file, "tls_client_cert_file"),
        )

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        # Made per call (a tuple, well under a microsecond): the token stays a SecretStr on the
        # generator, in clear only in the call that sends it.
        key = self._api_key
        return (("authorization", f"Bearer {key.get_secret_value()}"),) if key is not None else ()

    def _new_channel(self, aio: bool) -> tuple[Any, Any]:
        from ..protocol.gen.aios.embeddings.v1.embeddings_pb2_grpc import EmbeddingServiceStub
        from ..protocol.target import channel_options

        grpc = self._grpc()
        module = grpc.aio if aio else grpc
        options = channel_options(authority=self.params.tls_server_name, retry=self._retry_policy)
        creds = self._credentials()
        if creds is None:
            channel = module.insecure_channel(self.grpc_url, options=options)
        else:
            channel = module.secure_channel(self.grpc_url, creds, options=options)
        return channel, EmbeddingServiceStub(channel)

    def _sync_stub(self) -> Any:
        with self._lock:
            if self._stub is None:
                self._channel, self._stub = self._new_channel(aio=False)
            return self._stub

    def _async_stub(self) -> Any:
        return self._aio.get()[1]

    def close(self) -> None:
        """Close the sync channel and every async channel whose loop can still run it."""
        super().close()
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()
        for loop, (ch, _stub) in self._aio.drain():
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(ch.close())
            elif not loop.is_running():
                loop.run_until_complete(ch.close())
            else:
                asyncio.run_coroutine_threadsafe(ch.close(), loop)

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        pair = self._aio.pop_current()
        if pair is not None:
            await pair[0].close()
        self.close()

    async def __aenter__(self) -> AIOSEmbeddingGenerator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the embedding space ---------------------------------------------------------------
    def space(self) -> SpaceIdentity:
        """The space the server publishes for the model in Info, after what this client does (it asks
        for raw vectors and normalizes them itself, sends input types, may narrow ``dimensions``);
        a server that publishes none is known by the model's name, and the probes decide."""
        self._server_info()
        served = self._served
        if served is None or served.space is None:
            return self._declared_space()
        return remote_space(
            served.space, normalize=self.normalize, dimensions=self.dimensions, sends_input_type=True,
            server_normalizes=False,
        )

    def known_space(self) -> SpaceIdentity | None:
        return self.space() if self._info is not None else None

    def cache_scope(self) -> str | None:
        served = self._served
        return None if served is not None and served.space is not None else self.grpc_url

    # -- server info -----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Connect, ask the server for its models and limits, and check ``model`` and ``dims``."""
        self._server_info()

    def check(self, timeout_s: float = 10.0) -> str:
        """The server answers ``Info`` within ``timeout_s`` (with the key), serving the model at ``dims``."""
        from ..protocol.convert import info_from_response, pb

        stub = self._sync_stub()
        kwargs = {**self._call_kwargs(), "timeout": min(self.timeout_s, timeout_s)}
        self._set_info(info_from_response(self._rpc(lambda: stub.Info(pb.InfoRequest(), **kwargs))))
        served = self._served
        assert served is not None
        return f"{self.grpc_url} serves {served.name!r} ({served.dims or '?'} dims)"

    def _server_info(self) -> ServerInfo:
        return run(self._info_flow())

    async def _aserver_info(self) -> ServerInfo:
        return await arun(self._info_flow())

    def _info_flow(self) -> Flow[ServerInfo]:
        """Ask the server once for its models and limits (sync and async alike, :mod:`..flow`)."""
        if self._info is None:
            from ..protocol.convert import info_from_response, pb

            kwargs = self._call_kwargs()
            response = yield from self._rpc_flow(Step(
                lambda: self._sync_stub().Info(pb.InfoRequest(), **kwargs),
                lambda: self._async_stub().Info(pb.InfoRequest(), **kwargs),
            ))
            self._set_info(info_from_response(response))
        assert self._info is not None
        return self._info

    def _rpc_flow(self, step: Step[Any]) -> Flow[Any]:
        """One RPC; its failure as the SDK's error (the one place gRPC errors are translated)."""
        try:
            return (yield step)
        except self._grpc().RpcError as exc:
            raise self._error(exc) from exc

    def _set_info(self, info: ServerInfo) -> None:
        served = self._pick_model(info)
        width = self.dims if self.dimensions is None else self.dimensions
        if served.dims is not None and width is not None:
            if self.dimensions is not None and self.dimensions > served.dims:
                raise DimensionMismatchError(
                    f"{self._who()}: dimensions={self.dimensions} but {served.name!r} at {self.grpc_url!r} serves "
                    f"{served.dims}-dimensional vectors; dimensions can only shrink vectors"
                )
            if self.dimensions is None and self.dims != served.dims:
                raise DimensionMismatchError(
                    f"{self._who()}: declared dims={self.dims} but {served.name!r} at {self.grpc_url!r} serves "
                    f"{served.dims}-dimensional vectors; fix llm_parameters.dims or point to the right block"
                )
        self._info, self._served = info, served

    def _pick_model(self, info: ServerInfo) -> ServedModel:
        listed = ", ".join(info.names) or "none"
        if self.model:
            served = info.find(self.model)
            if served is None:
                raise RemoteNotFoundError(
                    f"{self._who()}: the server at {self.grpc_url!r} does not serve {self.model!r}; served: {listed}"
                )
            return served
        if len(info.models) != 1:
            raise ConfigurationError(
                f"{self._who()}: the server at {self.grpc_url!r} serves {len(info.models)} models ({listed}); "
                f"name one, e.g. 'aios:{info.names[0] if info.names else 'NAME'}' or model=..."
            )
        return info.models[0]

    @property
    def output_dims(self) -> int | None:
        declared = super().output_dims
        if declared is None and self._served is not None:
            return self._served.dims
        return declared

    @property
    def shown_model(self) -> str | None:
        if self.model is None and self._served is not None:  # the server's only model, once asked
            return self._served.name
        return self.model

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "target": self.grpc_url, "tls": not self.plaintext}

    # -- calls -----------------------------------------------------------------------------
    def _call_kwargs(self) -> dict[str, Any]:
        return {"timeout": self.timeout_s, "metadata": self._call_metadata()}

    def _error(self, exc: Any) -> BackendError:
        from ..protocol.convert import error_from_rpc

        return error_from_rpc(exc, who=self._who(), target=self.grpc_url, timeout_s=self.timeout_s)

    def _rpc(self, call: Any) -> Any:
        return run(self._rpc_flow(Step(call, _no_async)))

    def _chunk_size(self) -> int:
        # The whole input goes to _embed_batch, which splits it by the server's limits and
        # keeps several requests in flight; the base class would send chunks one by one.
        return 1 << 30

    def _split(self, texts: list[str]) -> list[list[str]]:
        """Requests that respect the server's limits on inputs and message bytes, in order."""
        from ..protocol.convert import request_size, response_size

        info, served = self._info, self._served
        assert info is not None and served is not None
        max_inputs = min(self.batch_size, info.max_inputs_per_request or self.batch_size)
        max_bytes = info.max_message_bytes or _DEFAULT_MESSAGE_BYTES
        width = self.dimensions or served.dims or self._observed_dims or _UNKNOWN_WIDTH
        batches: list[list[str]] = []
        current: list[str] = []
        size = 0
        for i, text in enumerate(texts):
            n = len(text.encode("utf-8"))
            if request_size(n, 1) > max_bytes:
                raise InvalidInputError(
                    f"{self._who()}: texts[{i}] is {n} bytes, over the message limit of {max_bytes} bytes "
                    f"of the server at {self.grpc_url!r}"
                )
            if current and (
                len(current) >= max_inputs
                or request_size(size + n, len(current) + 1) > max_bytes
                or response_size(len(current) + 1, width) > max_bytes
            ):
                batches.append(current)
                current, size = [], 0
            current.append(text)
            size += n
        if current:
            batches.append(current)
        return batches

    def _request(self, texts: list[str], input_type: InputType | None = None) -> Any:
        from ..protocol.convert import embed_request, selection_map

        assert self._served is not None
        # Vectors come back raw; the base class truncates and normalizes them, so that a
        # per-call ``normalize=`` override works and the math is the same as in-process.
        return embed_request(
            self._served.name,
            texts,
            normalize=False,
            dimensions=self.dimensions,
            request_id=uuid.uuid4().hex,
            selection=selection_map(self.selection_query),
            input_type=input_type,
        )

    def _assemble(self, responses: list[Any], batches: list[list[str]]) -> BackendResult:
        from ..protocol.convert import parse_embed_response

        results = [parse_embed_response(r, len(b), who=self._who()) for r, b in zip(responses, batches)]
        matrix = results[0].vectors if len(results) == 1 else np.concatenate([r.vectors for r in results])
        counts = [r.prompt_tokens for r in results]
        tokens = None if any(c is None for c in counts) else sum(counts)  # type: ignore[arg-type]
        return BackendResult(matrix, tokens)

    def _embed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> BackendResult:
        self._server_info()
        stub = self._sync_stub()
        batches = self._split(texts)
        kwargs = self._call_kwargs()
        if len(batches) == 1:
            return self._assemble([self._rpc(lambda: stub.Embed(self._request(batches[0], input_type), **kwargs))], batches)
        responses: list[Any] = [None] * len(batches)
        pending: deque[tuple[int, Any]] = deque()
        try:
            for index, batch in enumerate(batches):
                if len(pending) >= self.params.max_concurrent_requests:
                    done, future = pending.popleft()
                    responses[done] = self._rpc(future.result)
                pending.append((index, stub.Embed.future(self._request(batch, input_type), **kwargs)))
            while pending:
                done, future = pending.popleft()
                responses[done] = self._rpc(future.result)
        finally:
            for _, future in pending:
                future.cancel()
        return self._assemble(responses, batches)

    async def _aembed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> BackendResult:
        await self._aserver_info()
        stub = self._async_stub()
        batches = self._split(texts)
        kwargs = self._call_kwargs()
        gate = asyncio.Semaphore(self.params.max_concurrent_requests)

        async def one(batch: list[str]) -> Any:
            async with gate:
                return await arun(self._rpc_flow(Step(_no_async, lambda: stub.Embed(self._request(batch, input_type), **kwargs))))

        if len(batches) == 1:
            return self._assemble([await one(batches[0])], batches)
        tasks = [asyncio.ensure_future(one(b)) for b in batches]
        try:
            responses = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return self._assemble(list(responses), batches)


def _no_async() -> Any:
    raise AssertionError("a step run on one path only")  # pragma: no cover


#: the client documentation's name of the class: code copied from it keeps working
AIOSEmbeddings = AIOSEmbeddingGenerator


@hookimpl
def register_embedding_backends(register: Any) -> None:
    register("aios", AIOSEmbeddingGenerator.from_model_item)
