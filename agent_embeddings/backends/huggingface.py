"""``hf:`` — local sentence-transformers models.

torch and sentence-transformers are imported on first use, never at import time. Weights are
found locally (a path, the Hugging Face cache, or a package that ships them through the
``resolve_local_model`` hook); nothing is downloaded unless ``allow_download`` is set. The
generator holds what the spec asks of the texts (prompts, cuts, passes, the space); the loaded
model, shared between generators and run a pass per slot, is :mod:`.hf_model`'s.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import installed
from ..base import AbstractEmbeddingGenerator
from ..batching import AVERAGE_CHARS_PER_TOKEN, forward_passes
from ..errors import ConfigurationError, ModelNotFoundError
from ..hookspecs import hookimpl
from ..results import BackendResult
from ..space import SpaceIdentity
from ..vectors import InputType
from .hf_model import LoadedModel, load_onnx, load_torch, shared
from .hf_params import MAX_CHARS_PER_TOKEN, HuggingFaceParams
from .local_models import resolve_device, resolve_model_path, wanted_device
from .onnx_runtime import auto_streams, cache_root
from .precision import effective_precision, resolve_backend

__all__ = ["HuggingFaceEmbeddingGenerator", "HuggingFaceParams", "resolve_device", "resolve_model_path"]

log = logging.getLogger(__name__)


class HuggingFaceEmbeddingGenerator(AbstractEmbeddingGenerator):
    """Embeddings from a local sentence-transformers model.

    >>> gen = HuggingFaceEmbeddingGenerator(
    ...     model_name="sentence-transformers/all-MiniLM-L6-v2", device="cpu", batch_size=64, normalize=True)
    >>> len(gen.generate("vectorize this locally"))  # doctest: +SKIP
    384
    """

    provider = "hf"
    Params = HuggingFaceParams
    takes_input_type = True  # query/document prompts
    micro_batching_default = True

    params: HuggingFaceParams

    def __init__(
        self, params: HuggingFaceParams | None = None, *, model: str | None = None, name: str | None = None,
        model_name: str | None = None, **options: Any,
    ) -> None:
        """``HuggingFaceEmbeddingGenerator(model_name=..., device="cpu", batch_size=64)``: keyword options
        are :class:`HuggingFaceParams` fields, validated once (or pass ``params`` whole); ``model_name``
        (the client documentation's word) and ``model`` are the same thing."""
        if isinstance(params, str):  # HuggingFaceEmbeddingGenerator("org/model", ...), as before
            params, model_name = None, params
        if model and model_name and model != model_name:
            raise ConfigurationError(f"hf generator {name or model!r}: model and model_name differ; give one")
        model = model or model_name
        if not model:
            raise ConfigurationError("hf generator: give the model, e.g. model_name='sentence-transformers/all-MiniLM-L6-v2'")
        params = self.options(params, options, who=f"hf generator {name or model!r}")
        super().__init__(params, model=model, name=name)
        self.model_name = model
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._engine_name: str | None = None  # params.backend with auto resolved (see _engine)

    # -- loading ---------------------------------------------------------------------------
    def warm_up(self) -> None:
        self._model()

    def check(self, timeout_s: float = 10.0) -> str:
        """The extra is installed, the model's files are found and its device exists; no weights are
        read (torch is imported only to look for a device other than the CPU)."""
        p = self.params
        onnx = self._engine() != "torch"
        module, extra = ("onnxruntime", "onnx") if onnx else ("sentence_transformers", "hf")
        if not installed(module):
            raise ConfigurationError(
                f"{self._who()} needs the '{extra}' extra ({module} is not installed): "
                f"pip install 'agent-embeddings[{extra}]'"
            )
        path = resolve_model_path(self.model_name, revision=p.revision, allow_download=p.allow_download)
        if not Path(path).is_dir():  # allow_download: nothing local yet
            found = "not found locally: downloaded from the Hugging Face Hub on first use (allow_download)"
        elif not any((Path(path) / name).is_file() for name in ("modules.json", "config.json")):
            raise ModelNotFoundError(f"{self._who()}: {path} holds no model (neither modules.json nor config.json)")
        else:
            found = f"model files in {path}"
        if onnx:
            device = self._onnx_device()
        else:
            wanted = wanted_device(p.device, who=self._who())
            device = wanted if wanted == "cpu" else resolve_device(p.device, who=self._who())
        return f"{found}; device {device}" + (f"; backend auto: {self._engine()}" if p.backend == "auto" else "")

    def _engine(self) -> str:
        """``backend``, with ``auto`` resolved once: onnx or torch (:func:`.precision.resolve_backend`)."""
        if self._engine_name is None:
            p = self.params
            device = "cpu"
            if p.backend == "auto" and wanted_device(p.device, who=self._who()) != "cpu":
                device = resolve_device(p.device, who=self._who())
            self._engine_name = resolve_backend(p.backend, p.precision, device)
        return self._engine_name

    def _model(self) -> LoadedModel:
        loaded = self._loaded
        if loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    try:
                        self._loaded = self._load()
                    except (ConfigurationError, OSError) as exc:
                        if self.params.backend != "auto" or self._engine() == "torch":
                            raise
                        # a model ONNX Runtime cannot run (other modules, pooling, a failed check), or a
                        # cache it cannot write (a read-only image, a full disk): auto means torch
                        log.warning("%s: backend auto: torch, as ONNX Runtime cannot run it: %s", self._who(), exc)
                        self._engine_name = "torch"
                        self._loaded = self._load()
                loaded = self._loaded
        return loaded

    def _load(self) -> LoadedModel:
        backend = self._engine()
        onnx = backend != "torch"
        device = self._onnx_device() if onnx else resolve_device(self.params.device, who=self._who())
        p = self.params
        path = resolve_model_path(self.model_name, revision=p.revision, allow_download=p.allow_download)
        precision = effective_precision(backend, p.precision, device)
        key: tuple[Any, ...] = (path, device, p.max_seq_length, p.trust_remote_code, p.revision, backend, precision)
        streams = self._streams(backend)
        if onnx:  # a session's threads follow its streams: other streams, another session
            key += (str(cache_root(p.onnx_cache_dir)), streams)
            return shared(key, lambda: load_onnx(path, p, quantize=backend == "onnx-int8", streams=streams,
                                                 precision=precision, who=self._who(), model_name=self.model_name))
        return shared(key, lambda: load_torch(path, p, device=device, precision=precision, who=self._who(),
                                              model_name=self.model_name))

    def _streams(self, backend: str) -> int:
        """Forward passes at once on ``backend``: the spec's ``streams`` on ONNX Runtime (auto:
        :func:`.onnx_encode.auto_streams`), 1 on torch."""
        if backend == "torch":
            return 1
        streams = self.params.streams
        return auto_streams() if streams == "auto" else int(streams)

    def concurrent_calls(self) -> int:
        """The micro-batcher's workers: the loaded model's streams, else what the spec plans (asked on the
        first small call, perhaps on an event loop: nothing is loaded or imported here). Should auto
        then fall back to torch, the second worker only gathers the next batch while the first runs."""
        if self._loaded is not None:
            return self._loaded.streams
        return self._streams("torch" if self.params.backend == "torch" else "onnx")

    def _onnx_device(self) -> str:
        """ONNX Runtime runs these models on the CPU; a spec asking for another device is an error."""
        device = wanted_device(self.params.device, who=self._who())
        if device not in ("cpu", "auto"):
            raise ConfigurationError(
                f"{self._who()}: backend {self.params.backend!r} runs on the CPU, not on device {device!r}; "
                "set llm_parameters.device to 'cpu' or use backend 'torch'"
            )
        return "cpu"

    @property
    def output_dims(self) -> int | None:
        declared = super().output_dims
        if declared is None and self._loaded is not None:
            return self._loaded.dims
        return declared

    # -- the backend call ------------------------------------------------------------------
    #: Texts per backend call (one worker-thread call): four batches. Sorted by length as a whole
    #: and then cut into forward passes, they pad less than four calls of one batch each: about 10%
    #: more throughput on short sentences.
    BATCHES_PER_CALL = 4
    #: A forward pass holds at most ``batch_size`` texts and, on the CPU, ``batch_size`` times this
    #: many padded tokens (its longest text times its texts, estimated from characters). Short
    #: sentences fill a pass with ``batch_size`` texts, as before; long texts make smaller passes,
    #: so that no pass holds the model for long: between passes a waiting caller gets its turn and
    #: a cancelled call stops (:mod:`..cancellation`). A CPU's time is linear in the tokens, so
    #: smaller passes cost nothing; a GPU wants its full batches (and takes milliseconds per pass).
    PASS_TOKENS_PER_TEXT = 32
    #: The fewest texts a stream's share of a call is cut to: a one-thread pass costs 8.0 ms of CPU for
    #: one sentence, 6.4 ms per sentence for four and 6.3 for sixteen (2-core AVX2, MiniLM-L6).
    STREAM_TEXTS = 4

    def _chunk_size(self) -> int:
        return self.batch_size * self.BATCHES_PER_CALL

    def _input_limit(self, loaded: LoadedModel) -> int | None:
        """Characters kept of each text (None: no cut)."""
        if self.params.max_input_chars is not None:
            return self.params.max_input_chars
        tokens = getattr(loaded.model, "max_seq_length", None)
        return tokens * MAX_CHARS_PER_TOKEN if tokens else None

    def _prompt(self, loaded: LoadedModel, input_type: InputType | None) -> str | None:
        """The prompt text for ``input_type``; None: the model's default prompt, if it has one.

        For a query (document): ``query_prompt``, else the model's prompt named
        ``query_prompt_name``, else the model's own ``query`` prompt, else what plain texts get.
        """
        model, p = loaded.model, self.params
        prompts: dict[str, str] = getattr(model, "prompts", None) or {}
        literal, name = p.prompt, p.prompt_name
        if input_type is not None:
            kind_literal = getattr(p, f"{input_type}_prompt")
            kind_name = getattr(p, f"{input_type}_prompt_name")
            if kind_literal is not None or kind_name is not None:
                literal, name = kind_literal, kind_name
            elif input_type in prompts:
                literal, name = None, input_type
        if literal is not None:
            return literal
        if name is not None:
            if name not in prompts:
                raise ConfigurationError(
                    f"{self._who()}: the model has no prompt named {name!r}; its prompts: {sorted(prompts) or 'none'}"
                )
            return prompts[name]
        return None

    def input_signature(self, input_type: InputType | None) -> str | None:
        """The prompt a query or document is embedded with (the model is loaded to read its prompts)."""
        return None if input_type is None else (self._prompt(self._model(), input_type) or "")

    def _effective_prompt(self, loaded: LoadedModel, input_type: InputType | None) -> str | None:
        """The prompt texts of ``input_type`` really get: the spec's or the model's named one, else the
        model's default prompt (which sentence-transformers applies by itself), else none."""
        prompt = self._prompt(loaded, input_type)
        if prompt is None:
            default = getattr(loaded.model, "default_prompt_name", None)
            prompt = (getattr(loaded.model, "prompts", None) or {}).get(default) if default else None
        return prompt or None

    def space(self) -> SpaceIdentity:
        """Read off the loaded model: effective prompts, width and sequence limit. Precision is what the
        numbers are: fp32 torch and ONNX share one (they agree to 1e-6); int8 and bf16 are each their
        own, as their vectors move far more than fp32 ever does between machines (bf16: min cosine
        0.99991 to fp32 over 1,000 texts, top-10 neighbours 99.3% the same; docs/performance.md)."""
        loaded = self._model()
        seq = getattr(loaded.model, "max_seq_length", None)
        return SpaceIdentity(
            model=self.model_identity, revision=self.params.revision,
            precision=loaded.precision,
            prompt=self._effective_prompt(loaded, None), query_prompt=self._effective_prompt(loaded, "query"),
            document_prompt=self._effective_prompt(loaded, "document"), normalize=self.normalize,
            dims=self.dimensions or self.dims or loaded.dims, dimensions=self.dimensions,
            max_seq_length=int(seq) if seq else None,
        )

    def known_space(self) -> SpaceIdentity | None:
        return self.space() if self._loaded is not None else None

    def cache_scope(self) -> str | None:
        return None  # the space (model, precision, prompts, limits) pins the vectors down

    def _embed_batch(self, texts: list[str], *, input_type: InputType | None = None) -> BackendResult:
        loaded = self._model()
        limit = self._input_limit(loaded)
        if limit is not None and any(len(t) > limit for t in texts):
            texts = [t[:limit] for t in texts]
        prompt = self._prompt(loaded, input_type)
        run_pass = functools.partial(loaded.run_pass, batch_size=self.batch_size, who=self._who())
        with loaded.call() as streams:
            passes = self._passes(loaded, texts, prompt, streams)
            if len(passes) == 1:
                vectors, counts = run_pass(texts, prompt)
                return BackendResult(vectors, None if counts is None else sum(counts), counts)
            results: Iterable[tuple[np.ndarray, list[int] | None]]
            if loaded.pool is not None and streams > 1:  # side by side, each in a copy of this call's context
                contexts = [contextvars.copy_context() for _ in passes]  # (its cancellation token)
                results = list(loaded.pool.map(
                    lambda ctx, rows: ctx.run(run_pass, [texts[i] for i in rows], prompt), contexts, passes
                ))
            else:
                results = [run_pass([texts[i] for i in rows], prompt) for rows in passes]
        out: np.ndarray | None = None
        all_counts: list[int] | None = [0] * len(texts)
        for rows, (vectors, counts) in zip(passes, results):
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
            if counts is None or all_counts is None:
                all_counts = None
            else:
                for i, count in zip(rows, counts):
                    all_counts[i] = count
        assert out is not None
        return BackendResult(out, None if all_counts is None else sum(all_counts), all_counts)

    def _passes(self, loaded: LoadedModel, texts: list[str], prompt: str | None, streams: int = 1) -> list[list[int]]:
        """Row indices per forward pass, by estimated tokens (:func:`..batching.forward_passes`). Over
        ``streams`` idle streams, a call of at least ``STREAM_TEXTS`` texts per stream is cut into
        equal passes, a multiple of the streams in number (none waits on a short last one); smaller
        passes would cost more CPU per text than they save."""
        most = getattr(loaded.model, "max_seq_length", None) or 1 << 30  # the model reads no further
        extra = len(prompt) // AVERAGE_CHARS_PER_TOKEN + 2 if prompt else 2  # the prompt, the [CLS]/[SEP] a tokenizer adds
        budget = self.batch_size * (self.PASS_TOKENS_PER_TEXT if loaded.cpu else most)
        size = self.batch_size
        parts = min(streams, len(texts) // self.STREAM_TEXTS)
        if parts > 1:
            rounds = -(-len(texts) // (parts * size))
            size = -(-len(texts) // (parts * rounds))
        lengths = [min(len(t) // AVERAGE_CHARS_PER_TOKEN + extra, most) for t in texts]
        return forward_passes(lengths, size, budget, ties=texts)

    def count_tokens(self, texts: Sequence[str], *, input_type: InputType | None = None) -> int | None:
        loaded = self._model()
        limit = self._input_limit(loaded)
        prompt = self._prompt(loaded, input_type)
        with loaded.slots:
            counts = loaded.token_counts([t[:limit] if limit else t for t in texts], prompt)
        return None if counts is None else sum(counts)

    def describe(self) -> dict[str, Any]:
        described = {**super().describe(), "device": self.params.device, "backend": self._engine_name or self.params.backend}
        if self._loaded is not None:
            described["precision"] = self._loaded.precision
            described["streams"] = self._loaded.streams
        return described

    def close(self) -> None:
        super().close()
        self._loaded = None  # the shared model is freed when no generator holds it


@hookimpl
def register_embedding_backends(register: Any) -> None:
    register("hf", HuggingFaceEmbeddingGenerator.from_model_item)
