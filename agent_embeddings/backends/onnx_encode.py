"""The ONNX Runtime encoder of ``hf:`` items: tokenize, run the graph, pool, normalize.

An :class:`OnnxEncoder` reads a folder written by :mod:`.onnx_export` (``meta.json``, the
tokenizer) and one of its graphs (fp32, or the int8 one of :mod:`.onnx_quantize`). Pooling and
normalization follow the model's sentence-transformers modules (Pooling with cls/mean/max,
optional Normalize).

Running needs onnxruntime, ``tokenizers`` and numpy only: the exported ``tokenizer.json`` is
read by the Rust tokenizer that transformers' fast tokenizers wrap, with the same truncation
and padding, so a process that serves a cached export never imports torch, transformers or
sentence-transformers (seconds of start-up and hundreds of MB; only the export needs them)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ConfigurationError

__all__ = [
    "META", "MODEL", "POOLING_MODES", "TOKENIZER", "OnnxEncoder", "auto_streams", "cpu_cores", "load_tokenizer",
    "session_options",
]

POOLING_MODES = ("cls", "mean", "max")
#: The files of a cache folder: its description, the graph, and the fast tokenizer's own file.
META = "meta.json"
MODEL = "model.onnx"
TOKENIZER = "tokenizer/tokenizer.json"


def cpu_cores() -> int:
    """ONNX Runtime's threads: ``AGENT_EMBEDDINGS_ONNX_THREADS``, else ``OMP_NUM_THREADS`` (what torch
    obeys, and what Ray sets to each worker's CPUs: without it, every actor of a Ray job would start
    a thread per core of its node), else the cores this process may use."""
    env = os.environ.get("AGENT_EMBEDDINGS_ONNX_THREADS")
    if env:
        try:
            if int(env) > 0:
                return int(env)
        except ValueError:
            pass
        raise ConfigurationError(f"AGENT_EMBEDDINGS_ONNX_THREADS={env!r} is not a positive integer")
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # OpenMP allows a list: "4,2"
    if omp.isdigit() and int(omp) > 0:  # anything else is OpenMP's business, not ours to refuse
        return int(omp)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def auto_streams(cores: int | None = None) -> int:
    """``streams: auto``: 2 where 2 or more cores are there, else 1.

    Measured on 2 AVX2 cores with all-MiniLM-L6-v2 (docs/performance.md): a pass of one sentence
    costs 13.4 ms of CPU on 2 threads (the threads meet at every operator) against 8.0 ms on one,
    so two one-thread passes side by side serve 191 sentences/s where one two-thread pass at a
    time serves 140 (batches of 64: 322 vs 302 texts/s). Two streams also overlap one pass's
    tokenizing and pooling with the other's graph. More streams trade a lone request's latency for
    throughput: a spec that wants that says how many."""
    cores = cpu_cores() if cores is None else cores
    return 2 if cores >= 2 else 1


def session_options(threads: int) -> Any:
    """The ONNX Runtime session options of every pass: ``threads`` per pass, operators in sequence,
    every graph optimization."""
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        # what torch's OpenMP threads obey: idle threads sleep instead of spinning, on a box whose
        # cores other processes need (make test's workers); ONNX Runtime spins by default
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxEncoder:
    """A sentence-transformers-like encoder over an ONNX Runtime session.

    Exposes what the ``hf:`` backend uses: ``encode``, ``feed`` (whose masks give usage),
    ``token_counts``, ``tokenizer`` (a ``tokenizers.Tokenizer``), ``max_seq_length``,
    ``get_embedding_dimension``. ``encode`` may run in ``streams`` threads at once: the session's
    ``run`` is thread-safe, and the tokenizer is configured once here and only read afterwards.
    Each pass gets ``cpu_cores() // streams`` threads (at least one).
    """

    def __init__(
        self, folder: Path, model_file: Path, *, max_seq_length: int | None = None, streams: int = 1
    ) -> None:
        ort = require("onnxruntime", "onnx")
        meta = json.loads((folder / META).read_text())
        self.meta = meta
        self.folder = folder
        self.model_file = model_file
        self.pooling: list[str] = list(meta["pooling"])
        self.normalize_output: bool = meta["normalize"]
        self.do_lower_case: bool = meta.get("do_lower_case", False)
        self.prompts: dict[str, str] = meta.get("prompts", {})
        self.default_prompt_name: str | None = meta.get("default_prompt_name")
        self.max_seq_length: int | None = max_seq_length or meta.get("max_seq_length")
        self.tokenizer = load_tokenizer(folder, self.max_seq_length)
        self.threads = max(1, cpu_cores() // streams)  # per pass
        self.session = ort.InferenceSession(
            str(model_file), session_options(self.threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._dims = int(meta["dims"])

    def get_embedding_dimension(self) -> int:
        return self._dims

    def _prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            raise ValueError(f"prompt name {name!r} not found; the model's prompts: {sorted(self.prompts)}")
        return self.prompts[name]

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        **_ignored: Any,
    ) -> np.ndarray:
        """float32 sentence embeddings, one row per text (sorted by length inside, like sentence-transformers)."""
        prompt = self._prompt(prompt, prompt_name)
        items = [prompt + t for t in texts] if prompt else list(texts)
        if self.do_lower_case:
            items = [t.lower() for t in items]
        out = np.empty((len(items), self._dims), dtype=np.float32)
        order = np.argsort([-len(t) for t in items], kind="stable")
        for start in range(0, len(items), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._forward([items[i] for i in idx])
        return out

    def feed(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The session's inputs for ``texts``: tokenized, truncated, padded to the longest."""
        encodings = self.tokenizer.encode_batch(texts)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return feed

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens the graph reads per text (special tokens included, truncated as :meth:`encode` does)."""
        items = [t.lower() for t in texts] if self.do_lower_case else list(texts)
        return [sum(e.attention_mask) for e in self.tokenizer.encode_batch(items)]

    def _forward(self, texts: list[str]) -> np.ndarray:
        feed = self.feed(texts)
        mask = feed["attention_mask"]
        hidden = self.session.run(None, {n: feed[n] for n in self.input_names})[0].astype(np.float32, copy=False)
        vectors = _pool(hidden, mask, self.pooling)
        if self.normalize_output:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


def load_tokenizer(folder: Path, max_length: int | None) -> Any:
    """The export's fast tokenizer (``tokenizers.Tokenizer``), set up as transformers sets it up for
    ``tokenizer(texts, padding=True, truncation="longest_first", max_length=max_length)``: its
    ``tokenizer_config.json`` says the padding token and side, the truncation side, and the length
    when ``max_length`` is None."""
    tokenizers = require("tokenizers", "onnx")
    path = folder / TOKENIZER
    if not path.is_file():
        raise ConfigurationError(
            f"the ONNX export in {folder} has no {TOKENIZER} (its model has no fast tokenizer): the onnx "
            "backends need one; use llm_parameters.backend='torch'"
        )
    config_file = path.with_name("tokenizer_config.json")
    config: dict[str, Any] = json.loads(config_file.read_text()) if config_file.is_file() else {}
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    limit = max_length or config.get("model_max_length")
    if limit and limit < 1_000_000:  # transformers' "no limit" is a huge number
        tokenizer.enable_truncation(int(limit), strategy="longest_first",
                                    direction=config.get("truncation_side", "right"))
    else:
        tokenizer.no_truncation()
    pad_token = config.get("pad_token")
    pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
    pad_id = tokenizer.token_to_id(pad_token) if pad_token else None
    if pad_id is None:  # transformers refuses to pad without a pad token; an export never lacks one
        raise ConfigurationError(f"the ONNX export in {folder} has no padding token; use llm_parameters.backend='torch'")
    tokenizer.enable_padding(direction=config.get("padding_side", "right"), pad_id=pad_id, pad_token=pad_token,
                             pad_type_id=int(config.get("pad_token_type_id", 0)))
    return tokenizer


def _pool(hidden: np.ndarray, mask: np.ndarray, modes: list[str]) -> np.ndarray:
    """sentence-transformers' Pooling for cls / mean / max (several modes are concatenated)."""
    parts = []
    m = mask[..., None].astype(np.float32)
    for mode in modes:
        if mode == "cls":
            first = mask.argmax(axis=1)  # the first real token (right or left padding)
            parts.append(hidden[np.arange(hidden.shape[0]), first])
        elif mode == "mean":
            parts.append((hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9))
        elif mode == "max":
            parts.append(np.where(m > 0, hidden, -np.inf).max(axis=1))
        else:  # pragma: no cover - refused at export
            raise ConfigurationError(f"pooling mode {mode!r} is not supported by the onnx backend")
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)
