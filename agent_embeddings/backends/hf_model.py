"""The model behind ``hf:`` generators: loaded once, shared, and run one forward pass per slot.

Every generator naming the same weights, device, engine, precision and sequence length gets the
same :class:`LoadedModel` (a weak cache: the model is freed when no generator holds it). What a
spec asks of the texts (prompts, cuts, passes) stays with the generator in :mod:`.huggingface`.

>>> loaded = shared(key, lambda: load_onnx(path, params, quantize=False, streams=2, precision="fp32",
...                                        who="hf generator 'minilm'", model_name=name))  # doctest: +SKIP
>>> vectors, counts = loaded.run_pass(["a text"], None, batch_size=64, who="hf")         # doctest: +SKIP
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._deps import require
from ..cancellation import raise_if_cancelled
from ..errors import ConfigurationError, ModelNotFoundError
from .hf_params import HuggingFaceParams
from .onnx_runtime import OnnxEncoder, load_onnx_encoder
from .positions import config_position_limit, position_limit
from .token_tally import Tally

__all__ = ["LoadedModel", "check_seq_length", "load_onnx", "load_torch", "shared"]


@dataclass(eq=False)
class LoadedModel:
    """A model shared by every generator naming the same weights, device and sequence length."""

    model: Any
    dims: int
    #: one permit per forward pass that may run at once: 1 for torch (its transformers tokenizer is not
    #: safe to share between threads), ``streams`` for ONNX Runtime
    slots: threading.BoundedSemaphore
    #: on the CPU (ONNX Runtime included): forward passes are also bounded in padded tokens
    cpu: bool = True
    #: what the numbers are: "fp32", "bf16" (torch) or "int8-r<recipe>" (ONNX Runtime)
    precision: str = "fp32"
    #: tokens per text as ``encode`` tokenized them (sentence-transformers' preprocess, the ONNX
    #: encoder's feed; None: counted apart)
    tally: Tally | None = None
    #: forward passes run side by side (ONNX Runtime's streams; 1: one at a time)
    streams: int = 1
    #: runs the passes of one call side by side when streams > 1
    pool: ThreadPoolExecutor | None = None
    #: backend calls running on the model now, and the lock that counts them
    calls: int = 0
    calls_lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def call(self) -> Iterator[int]:
        """One backend call: yields the streams no other call is using (at least 1), which it may split
        over. Under concurrent load each micro-batcher worker's call keeps to its own stream; a lone
        call takes them all."""
        with self.calls_lock:
            idle = max(1, self.streams - self.calls)
            self.calls += 1
        try:
            yield idle
        finally:
            with self.calls_lock:
                self.calls -= 1

    def run_pass(
        self, texts: list[str], prompt: str | None, *, batch_size: int, who: str
    ) -> tuple[np.ndarray, list[int] | None]:
        """One forward pass (one ``encode`` call of at most ``batch_size`` texts) in one of the slots:
        the vectors (float32, not normalized) and the tokens read per text (None: not countable)."""
        with self.slots:
            raise_if_cancelled(who)  # in the slot: the call may have waited for it
            if self.tally is not None:
                self.tally.open()
            vectors = self.model.encode(
                texts,
                batch_size=batch_size,
                prompt=prompt,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            counts = self.tally.counts(texts, prompt) if self.tally is not None else None
            if counts is None:
                counts = self.token_counts(texts, prompt)
        return vectors, counts

    def token_counts(self, texts: list[str], prompt: str | None) -> list[int] | None:
        """Tokens the model reads per text, the prompt included (usage counts what is computed): a
        second tokenizer pass, for texts ``encode``'s own tokenization did not count."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None:
            return None
        if prompt is None:  # the model's default prompt, which encode() applies by itself
            default = getattr(self.model, "default_prompt_name", None)
            prompt = (getattr(self.model, "prompts", None) or {}).get(default) if default else None
        if prompt:
            texts = [prompt + t for t in texts]
        if isinstance(self.model, OnnxEncoder):  # the Rust tokenizer itself, not transformers' wrapper
            return self.model.token_counts(texts)
        ids = tokenizer(
            texts,
            truncation=True,
            max_length=self.model.max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return [len(i) for i in ids]


_shared: weakref.WeakValueDictionary[tuple[Any, ...], LoadedModel] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def shared(key: tuple[Any, ...], load: Callable[[], LoadedModel]) -> LoadedModel:
    """The model loaded under ``key``, loading it with ``load()`` if no generator holds one. Loads
    are one at a time, so two generators of one spec never read the same weights twice."""
    with _shared_lock:
        loaded = _shared.get(key)
        if loaded is None:
            loaded = _shared[key] = load()
        return loaded


def load_onnx(
    path: str, params: HuggingFaceParams, *, quantize: bool, streams: int, precision: str, who: str,
    model_name: str,
) -> LoadedModel:
    """An ONNX Runtime encoder (exported and cached on first use) with ``streams`` passes at once."""
    encoder = load_onnx_encoder(
        path,
        quantize=quantize,
        max_seq_length=params.max_seq_length,
        trust_remote_code=params.trust_remote_code,
        revision=params.revision,
        allow_download=params.allow_download,
        cache_dir=params.onnx_cache_dir,
        streams=streams,
        who=who,
    )
    check_seq_length(params, encoder.meta.get("max_positions") or config_position_limit(path), model_name, who)
    encoder.feed = (feed_tally := Tally()).wrap(encoder.feed)  # type: ignore[method-assign]
    pool = ThreadPoolExecutor(streams, thread_name_prefix="onnx-stream") if streams > 1 else None
    return LoadedModel(model=encoder, dims=encoder.get_embedding_dimension(),
                       slots=threading.BoundedSemaphore(streams), precision=precision,
                       tally=feed_tally, streams=streams, pool=pool)


def load_torch(
    path: str, params: HuggingFaceParams, *, device: str, precision: str, who: str, model_name: str,
) -> LoadedModel:
    """A sentence-transformers model on ``device`` (torch imported here, not before), one pass at a time."""
    SentenceTransformer = require("sentence_transformers", "hf", who=who).SentenceTransformer
    try:
        model = SentenceTransformer(
            path,
            device=device,
            trust_remote_code=params.trust_remote_code,
            revision=params.revision,
            local_files_only=not params.allow_download,
        )
    except OSError as exc:
        raise ModelNotFoundError(f"{who}: cannot load model from {path}: {exc}") from exc
    check_seq_length(params, position_limit(model), model_name, who)
    if params.max_seq_length is not None:
        model.max_seq_length = params.max_seq_length
    if precision == "bf16":  # encode() hands back float32 numpy all the same
        model = model.to(require("torch", "hf", who=who).bfloat16)
    get_dims = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    tally = None
    if callable(getattr(model, "preprocess", None)):
        tally = Tally()
        model.preprocess = tally.wrap(model.preprocess)  # this instance only; encode() calls it per batch
    return LoadedModel(model=model, dims=int(get_dims()), slots=threading.BoundedSemaphore(1),
                       cpu=device == "cpu", precision=precision, tally=tally)


def check_seq_length(params: HuggingFaceParams, limit: int | None, model_name: str, who: str) -> None:
    """Refuse a ``max_seq_length`` over the model's own limit now, not on the first long text.

    Refused rather than clamped: the spec asks for something the model cannot do, and a
    silent clamp would hide that texts are cut earlier than it says.
    """
    asked = params.max_seq_length
    if asked is not None and limit is not None and asked > limit:
        raise ConfigurationError(
            f"{who}: llm_parameters.max_seq_length={asked} is more than the {limit} tokens model "
            f"{model_name!r} can read (its position embeddings); set it to {limit} or less, or leave it "
            "out for the model's own default"
        )
