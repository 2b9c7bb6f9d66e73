"""ONNX Runtime for ``hf:`` models: export once from the local weights, quantize, cache, encode.

``backend: "onnx"`` runs the model's transformer as an fp32 ONNX graph; ``backend: "onnx-int8"``
runs it with dynamically quantized int8 MatMuls, their inputs smoothed first, several times faster
than torch on CPUs with AVX512-VNNI or AVX2. Tokenization uses the model's own tokenizer, pooling
and normalization follow the model's sentence-transformers modules (Transformer, Pooling with
cls/mean/max, optional Normalize); anything else is refused.

:func:`load_onnx_encoder` ties the three steps together, each in a module of its own:
:mod:`.onnx_export` (the fp32 graph, checked against torch, and the cache folder),
:mod:`.onnx_quantize` (the int8 graph) and :mod:`.onnx_encode` (the encoder over a session)."""

from __future__ import annotations

import logging
import os

from .._deps import require
from ..errors import ConfigurationError
from . import onnx_export, onnx_quantize
from .onnx_encode import META, MODEL, OnnxEncoder, auto_streams, cpu_cores
from .onnx_export import cache_key, cache_root, file_lock

__all__ = ["OnnxEncoder", "auto_streams", "cache_key", "cache_root", "cpu_cores", "load_onnx_encoder"]

log = logging.getLogger(__name__)


def load_onnx_encoder(
    model_path: str,
    *,
    quantize: bool,
    max_seq_length: int | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    streams: int = 1,
    who: str = "hf",
) -> OnnxEncoder:
    """The encoder for ``model_path``, exporting (and quantizing) into the cache on first use."""
    require("onnxruntime", "onnx", who=who)
    root = cache_root(cache_dir)
    key = cache_key(model_path, revision=revision, trust_remote_code=trust_remote_code)
    folder = root / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"{who}: cannot create the ONNX cache folder {folder}: {exc}. Set AGENT_EMBEDDINGS_CACHE_DIR "
            "or llm_parameters.onnx_cache_dir to a writable folder"
        ) from exc
    base, int8 = folder / "fp32", folder / "int8"
    if not (base / META).is_file() or (quantize and not (int8 / MODEL).is_file()):
        with file_lock(folder / ".lock"):
            if not (base / META).is_file():
                onnx_export.export(
                    model_path,
                    base,
                    trust_remote_code=trust_remote_code,
                    revision=revision,
                    allow_download=allow_download,
                    who=who,
                )
            if quantize and not (int8 / MODEL).is_file():
                onnx_quantize.quantize(base / MODEL, int8, who=who)
    model_file = (int8 if quantize else base) / MODEL
    # debug: the default spec loads this on every CLI call; describe() and validate --check name the engine
    log.debug("%s: ONNX Runtime %s model %s", who, "int8" if quantize else "fp32", model_file)
    return OnnxEncoder(base, model_file, max_seq_length=max_seq_length, streams=streams)
