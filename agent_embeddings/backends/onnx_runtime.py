"""ONNX Runtime for ``hf:`` models: export once from the local weights, quantize, cache, encode.

``backend: "onnx"`` runs the model's transformer as an fp32 ONNX graph; ``backend: "onnx-int8"``
runs it with dynamically quantized int8 MatMuls, their inputs smoothed first (``_quantize``), several
times faster than torch on CPUs with AVX512-VNNI or AVX2. Tokenization uses the model's own
tokenizer, pooling and normalization follow the model's sentence-transformers modules
(Transformer, Pooling with cls/mean/max, optional Normalize); anything else is refused.

The export needs torch and sentence-transformers (the ``hf`` extra) once; it never touches the
network unless ``allow_download`` is set. The result is cached under
``$AGENT_EMBEDDINGS_CACHE_DIR/onnx`` (default ``~/.cache/agent-embeddings/onnx``) in a folder
named after a hash of the model's files (name, size, mtime) and the export recipe, so a later
load needs only onnxruntime and the tokenizer. Artifacts are written to a temporary folder and
renamed into place: concurrent processes never see half-written files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..cache import cache_dir
from ..errors import ConfigurationError, ModelNotFoundError
from .positions import position_limit

__all__ = ["BACKENDS", "OnnxEncoder", "cache_root", "load_onnx_encoder", "stats"]

log = logging.getLogger(__name__)

#: Accepted values of ``llm_parameters.backend`` for ``hf:`` items.
BACKENDS = ("torch", "onnx", "onnx-int8")
#: Bump when the export or quantization recipe changes: old cache entries are then ignored.
RECIPE_VERSION = 2
#: How much of an input channel's range the int8 recipe moves into the weights (SmoothQuant's alpha).
SMOOTH_ALPHA = 0.8
#: Texts the int8 recipe measures activation ranges on: few, but varied on purpose.
CALIBRATION_TEXTS = (
    "A man is eating food.",
    "ok",
    "What is the capital of France?",
    "How do I reset my password if I no longer have access to the email address on my account?",
    "The cheetah chased its prey across the dry savanna at dawn while the rest of the herd scattered.",
    "Quarterly revenue rose 12% year over year to $4.3 billion, driven by cloud subscriptions in EMEA and APAC.",
    "def embed(texts: list[str]) -> np.ndarray:\n    return model.encode(texts, batch_size=64)",
    "Error 404: the requested URL /api/v2/items?id=17 was not found on this server.",
    "Les agents ont besoin de vecteurs pour retrouver les bons documents.",
    "I loved it!!! Best purchase ever :)",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "She played the violin beautifully at the concert last night, and the audience stood to applaud.",
    "BREAKING: Markets fall as central bank raises interest rates by 0.5 percentage points.",
    "Patient presents with mild fever, dry cough and fatigue for three days; no known allergies.",
    "- install the package\n- run `make test`\n- open http://localhost:8080 in a browser",
    "After months of debate the committee found that the zoning amendments ignored residents' worries about noise.",
)
POOLING_MODES = ("cls", "mean", "max")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_META = "meta.json"
_MODEL = "model.onnx"

#: How many exports and quantizations this process ran (tests use it to see the cache work).
stats = {"exports": 0, "quantizations": 0}
_stats_lock = threading.Lock()


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Where ONNX exports are cached: ``override``, else ``$AGENT_EMBEDDINGS_CACHE_DIR/onnx``, else
    ``~/.cache/agent-embeddings/onnx`` (the same root as the embedding cache's SQLite file)."""
    return Path(override).expanduser() if override else cache_dir() / "onnx"


def cpu_cores() -> int:
    """Cores this process may use (``AGENT_EMBEDDINGS_ONNX_THREADS`` overrides)."""
    env = os.environ.get("AGENT_EMBEDDINGS_ONNX_THREADS")
    if env:
        try:
            if int(env) > 0:
                return int(env)
        except ValueError:
            pass
        raise ConfigurationError(f"AGENT_EMBEDDINGS_ONNX_THREADS={env!r} is not a positive integer")
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _fingerprint(model_path: str, revision: str | None) -> dict[str, Any]:
    """What identifies the weights: every file's relative name, size and mtime."""
    root = Path(model_path)
    if not root.is_dir():  # a Hub name with allow_download: the name and revision are all we have
        return {"model": model_path, "revision": revision}
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = full.stat()
                files.append([str(full.relative_to(root)), st.st_size, st.st_mtime_ns])
    return {"model": str(root.resolve()), "revision": revision, "files": files}


def cache_key(model_path: str, *, revision: str | None = None, trust_remote_code: bool = False) -> str:
    data = {"recipe": RECIPE_VERSION, "trust_remote_code": trust_remote_code, **_fingerprint(model_path, revision)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An advisory inter-process lock (POSIX); elsewhere, atomic renames alone keep files whole."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary folder into place; if another process won, keep theirs."""
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        os.replace(tmp, final)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise


class OnnxEncoder:
    """A sentence-transformers-like encoder over an ONNX Runtime session.

    Exposes what the ``hf:`` backend uses: ``encode``, ``tokenizer``, ``max_seq_length``,
    ``get_embedding_dimension``.
    """

    def __init__(self, folder: Path, model_file: Path, *, max_seq_length: int | None = None) -> None:
        ort = require("onnxruntime", "onnx")
        transformers = require("transformers", "hf")
        meta = json.loads((folder / _META).read_text())
        self.meta = meta
        self.folder = folder
        self.model_file = model_file
        self.pooling: list[str] = list(meta["pooling"])
        self.normalize_output: bool = meta["normalize"]
        self.do_lower_case: bool = meta.get("do_lower_case", False)
        self.prompts: dict[str, str] = meta.get("prompts", {})
        self.default_prompt_name: str | None = meta.get("default_prompt_name")
        self.max_seq_length: int | None = max_seq_length or meta.get("max_seq_length")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
        self.threads = cpu_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
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
        """The session's inputs for ``texts``: tokenized, padded to the longest, truncated."""
        kwargs: dict[str, Any] = {"padding": True, "truncation": "longest_first", "return_tensors": "np"}
        if self.max_seq_length:
            kwargs["max_length"] = self.max_seq_length
        enc = self.tokenizer(texts, **kwargs)
        return {name: np.asarray(enc[name], dtype=np.int64) for name in {*self.input_names, "attention_mask"}}

    def _forward(self, texts: list[str]) -> np.ndarray:
        feed = self.feed(texts)
        mask = feed["attention_mask"]
        hidden = self.session.run(None, {n: feed[n] for n in self.input_names})[0].astype(np.float32, copy=False)
        vectors = _pool(hidden, mask, self.pooling)
        if self.normalize_output:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


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


def load_onnx_encoder(
    model_path: str,
    *,
    quantize: bool,
    max_seq_length: int | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
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
    if not (base / _META).is_file() or (quantize and not (int8 / _MODEL).is_file()):
        with _file_lock(folder / ".lock"):
            if not (base / _META).is_file():
                _export(
                    model_path,
                    base,
                    trust_remote_code=trust_remote_code,
                    revision=revision,
                    allow_download=allow_download,
                    who=who,
                )
            if quantize and not (int8 / _MODEL).is_file():
                _quantize(base / _MODEL, int8, who=who)
    model_file = (int8 if quantize else base) / _MODEL
    log.info("%s: ONNX Runtime %s model %s", who, "int8" if quantize else "fp32", model_file)
    return OnnxEncoder(base, model_file, max_seq_length=max_seq_length)


def _pipeline(model: Any, who: str) -> dict[str, Any]:
    """Check the sentence-transformers modules and describe the pooling/normalization for meta.json."""
    names = [type(m).__name__ for m in model]
    if len(names) < 2 or names[0] != "Transformer" or names[1] != "Pooling" or names[2:] not in ([], ["Normalize"]):
        raise ConfigurationError(
            f"{who}: the onnx backends support models made of Transformer, Pooling and an optional Normalize "
            f"module; this model has {names}. Use llm_parameters.backend='torch'"
        )
    pooling = model[1]
    modes = pooling.pooling_mode
    modes = [modes] if isinstance(modes, str) else list(modes)
    unsupported = [m for m in modes if m not in POOLING_MODES]
    if unsupported:
        raise ConfigurationError(
            f"{who}: pooling mode {unsupported[0]!r} is not supported by the onnx backends (supported: "
            f"{', '.join(POOLING_MODES)}). Use llm_parameters.backend='torch'"
        )
    if not getattr(pooling, "include_prompt", True):
        raise ConfigurationError(f"{who}: pooling with include_prompt=False is not supported by the onnx backends")
    return {
        "pooling": modes,
        "normalize": names[2:] == ["Normalize"],
        "do_lower_case": bool(getattr(model[0], "do_lower_case", False)),
        "max_seq_length": model.max_seq_length,
        "max_positions": position_limit(model),  # the bound on llm_parameters.max_seq_length
        "dims": int((getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()),
        "prompts": {k: v for k, v in (getattr(model, "prompts", None) or {}).items() if v is not None},
        "default_prompt_name": getattr(model, "default_prompt_name", None),
    }


def _export(
    model_path: str, dest: Path, *, trust_remote_code: bool, revision: str | None, allow_download: bool, who: str
) -> None:
    """Export the transformer to ``dest/model.onnx`` (fp32), with the tokenizer and meta.json."""
    torch = require("torch", "hf", who=who)
    st = require("sentence_transformers", "hf", who=who)
    try:
        model = st.SentenceTransformer(
            model_path,
            device="cpu",
            trust_remote_code=trust_remote_code,
            revision=revision,
            local_files_only=not allow_download,
        )
    except OSError as exc:
        raise ModelNotFoundError(f"{who}: cannot load model from {model_path}: {exc}") from exc
    model.eval()
    meta = _pipeline(model, who)
    transformer = model[0]
    auto_model = transformer.auto_model
    with contextlib.suppress(Exception):  # eager attention exports as plain ONNX ops
        auto_model.set_attn_implementation("eager")
    tokenizer = transformer.tokenizer
    sample = tokenizer(
        ["An example sentence.", "A second, somewhat longer example sentence."], padding=True, return_tensors="pt"
    )
    import inspect

    accepted = inspect.signature(auto_model.forward).parameters
    inputs = [name for name in _INPUTS if name in sample and name in accepted]

    class _Hidden(torch.nn.Module):  # type: ignore[misc,name-defined]  # torch is untyped here
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(inputs, args)), return_dict=True)[0]

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: fast, and needs no onnxscript.
            torch.onnx.export(
                _Hidden(auto_model).eval(),
                tuple(sample[name] for name in inputs),
                str(tmp / _MODEL),
                input_names=inputs,
                output_names=["token_embeddings"],
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*inputs, "token_embeddings"]},
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
            )
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        meta.update(recipe=RECIPE_VERSION, inputs=inputs, source=str(model_path))
        (tmp / _META).write_text(json.dumps(meta, indent=2))
        # Check the graph against torch before publishing it.
        encoder = OnnxEncoder(tmp, tmp / _MODEL)
        probe = ["An example sentence.", "Vectors for agents, exported once.", "short"]
        ours = encoder.encode(probe, batch_size=2)
        theirs = model.encode(probe, batch_size=2, convert_to_numpy=True)
        if not np.allclose(ours, theirs, atol=1e-3):
            raise ConfigurationError(
                f"{who}: the ONNX export of {model_path} does not reproduce the torch model "
                f"(max difference {float(np.abs(ours - theirs).max()):.3g}); use llm_parameters.backend='torch'"
            )
        del encoder
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with _stats_lock:
        stats["exports"] += 1
    log.info("%s: exported %s to %s", who, model_path, dest)


def _quiet_hint(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Please consider to run pre-processing")


def _quantize(source: Path, dest: Path, *, who: str) -> None:
    """Dynamic int8 quantization of every MatMul with a constant weight, after smoothing its input.

    Activations get one uint8 scale per batch, and in BERT-like models a few input channels of some
    MatMuls are outliers (all-MiniLM-L6-v2: up to 30, most under 2), which leaves the others a few
    levels (min cosine to fp32 0.974 on 2,000 sentences; int8 weights alone: 0.999). So first, as
    SmoothQuant (Xiao et al. 2022), input channel j of each MatMul is divided by ``s_j = a_j **
    SMOOTH_ALPHA / w_j ** (1 - SMOOTH_ALPHA)`` (an inserted Mul) and row j of its weights multiplied by
    it, exact in fp32: ``a_j`` is the channel's largest magnitude on ``CALIBRATION_TEXTS``, raised to
    the median over channels (one quiet there is never amplified), ``w_j`` the row's largest weight.
    Found by graph structure, not node names. Embedding tables stay fp32 (int8 saves disk, not time).
    """
    onnx = require("onnx", "onnx", who=who)
    quantization = require("onnxruntime.quantization", "onnx", who=who)
    large = source.stat().st_size > 1_800_000_000
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        model = onnx.load(str(source))
        try:
            smoothed = _smooth(onnx, model, lambda tensors: _calibrate(onnx, source, tmp, tensors, large))
        except Exception as exc:  # a graph this rewrite does not handle: quantize it unsmoothed, as before
            log.warning("%s: int8 without smoothing (less accurate): %s: %s", who, type(exc).__name__, exc)
            model, smoothed = onnx.load(str(source)), 0
        onnx.save(model, str(tmp / "smoothed.onnx"), save_as_external_data=large, location="smoothed.onnx.data")
        del model
        root = logging.getLogger()
        root.addFilter(_quiet_hint)  # it logs a pre-processing hint on the root logger
        try:
            quantization.quantize_dynamic(
                str(tmp / "smoothed.onnx"),
                str(tmp / _MODEL),
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                weight_type=quantization.QuantType.QInt8,
                use_external_data_format=large,
            )
        finally:
            root.removeFilter(_quiet_hint)
        for leftover in [*tmp.glob("calibrate.onnx*"), *tmp.glob("smoothed.onnx*")]:
            leftover.unlink()
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with _stats_lock:
        stats["quantizations"] += 1
    log.info("%s: quantized %s to %s (%d MatMul inputs smoothed)", who, source, dest, smoothed)


def _calibrate(onnx: Any, source: Path, tmp: Path, tensors: list[str], large: bool) -> dict[str, np.ndarray]:
    """Largest magnitude per last-axis channel of ``tensors`` on ``CALIBRATION_TEXTS`` (one padded batch)."""
    model = onnx.load(str(source))
    new = set(tensors) - {o.name for o in model.graph.output}  # 1: FLOAT
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, 1, None) for t in sorted(new))
    onnx.save(model, str(tmp / "calibrate.onnx"), save_as_external_data=large, location="calibrate.onnx.data")
    del model
    encoder = OnnxEncoder(source.parent, tmp / "calibrate.onnx")
    feed = encoder.feed(list(CALIBRATION_TEXTS))
    values = encoder.session.run(tensors, {n: feed[n] for n in encoder.input_names})
    return {t: np.abs(v.reshape(-1, v.shape[-1])).max(axis=0).astype(np.float64) for t, v in zip(tensors, values)}


def _smooth(onnx: Any, model: Any, measure: Callable[[list[str]], dict[str, np.ndarray]]) -> int:
    """Rewrite ``model`` in place, ``x @ W`` as ``(x / s) @ (s[:, None] * W)`` for each MatMul input ``x``
    with constant 2-D float weights, ``measure`` giving each such ``x``'s largest magnitude per channel."""
    weights = {t.name: t for t in model.graph.initializer}
    groups: dict[str, list[Any]] = {}  # the MatMuls that read each input
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and weight.data_type == 1 and node.input[0] not in weights:
            groups.setdefault(node.input[0], []).append(node)
    amax = measure(list(groups)) if groups else {}
    muls: list[Any] = []
    for i, (tensor, nodes) in enumerate(groups.items()):
        mats = [onnx.numpy_helper.to_array(weights[n.input[1]]).astype(np.float64) for n in nodes]
        if (a := amax[tensor]).shape[0] != mats[0].shape[0] or not np.isfinite(a).all() or a.max() <= 0:
            continue
        w = np.maximum(np.max([np.abs(m).max(axis=1) for m in mats], axis=0), 1e-8)
        s = np.maximum(a, np.median(a)) ** SMOOTH_ALPHA / w ** (1 - SMOOTH_ALPHA)
        s /= np.exp(np.log(s).mean())  # geometric mean 1: magnitudes stay near the original ones
        name = f"agent_embeddings.smooth.{i}"
        model.graph.initializer.append(onnx.numpy_helper.from_array((1 / s).astype(np.float32), f"{name}.scale"))
        muls.append(onnx.helper.make_node("Mul", [tensor, f"{name}.scale"], [f"{name}.x"], name=name))
        for j, (node, m) in enumerate(zip(nodes, mats)):
            node.input[0], node.input[1] = f"{name}.x", f"{name}.w{j}"
            scaled = onnx.numpy_helper.from_array((m * s[:, None]).astype(np.float32), node.input[1])
            model.graph.initializer.append(scaled)
    order = list(model.graph.node)
    for mul in muls:  # right before the first node that reads it: the order stays topological
        order.insert(next(k for k, n in enumerate(order) if mul.output[0] in n.input), mul)
    del model.graph.node[:]
    model.graph.node.extend(order)  # the replaced weights, now unused, are dropped by quantize_dynamic
    return len(muls)
