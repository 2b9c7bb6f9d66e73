"""The fp32 ONNX export of an ``hf:`` model, checked against torch, and the cache it lands in.

The export needs torch and sentence-transformers (the ``hf`` extra) once; it never touches the
network unless ``allow_download`` is set. The result is cached under
``$AGENT_EMBEDDINGS_CACHE_DIR/onnx`` (default ``~/.cache/agent-embeddings/onnx``) in a folder
named after a hash of the model's files (name, size, mtime) and the export recipe, so a later
load needs only onnxruntime and the tokenizer. Artifacts are written to a temporary folder and
renamed into place (:func:`publish`): concurrent processes never see half-written files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..cache import cache_dir
from ..errors import ConfigurationError, ModelNotFoundError
from .onnx_encode import META, MODEL, POOLING_MODES, OnnxEncoder
from .positions import position_limit

__all__ = ["RECIPE_VERSION", "cache_key", "cache_root", "export", "file_lock", "publish"]

log = logging.getLogger(__name__)

#: Bump when the export or quantization recipe changes: old cache entries are then ignored.
RECIPE_VERSION = 3
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Where ONNX exports are cached: ``override``, else ``$AGENT_EMBEDDINGS_CACHE_DIR/onnx``, else
    ``~/.cache/agent-embeddings/onnx`` (the same root as the embedding cache's SQLite file)."""
    return Path(override).expanduser() if override else cache_dir() / "onnx"


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
def file_lock(path: Path) -> Iterator[None]:
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


def publish(tmp: Path, final: Path) -> None:
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


def export(
    model_path: str, dest: Path, *, trust_remote_code: bool, revision: str | None, allow_download: bool, who: str
) -> None:
    """Export the transformer to ``dest/model.onnx`` (fp32), with the tokenizer and meta.json."""
    # once per model and cache folder: seconds that a user should not take for a hang
    log.info("%s: exporting %s to ONNX once, into %s", who, model_path, dest.parent)
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
    if not getattr(tokenizer, "is_fast", False):  # the encoder reads tokenizer.json, which only a fast one has
        raise ConfigurationError(
            f"{who}: the onnx backends need a fast tokenizer (tokenizer.json); {model_path} has "
            f"{type(tokenizer).__name__}. Use llm_parameters.backend='torch'"
        )
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
                str(tmp / MODEL),
                input_names=inputs,
                output_names=["token_embeddings"],
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*inputs, "token_embeddings"]},
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
            )
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        meta.update(recipe=RECIPE_VERSION, inputs=inputs, source=str(model_path))
        (tmp / META).write_text(json.dumps(meta, indent=2))
        # Check the graph against torch before publishing it.
        encoder = OnnxEncoder(tmp, tmp / MODEL)
        probe = ["An example sentence.", "Vectors for agents, exported once.", "short"]
        ours = encoder.encode(probe, batch_size=2)
        theirs = model.encode(probe, batch_size=2, convert_to_numpy=True)
        if not np.allclose(ours, theirs, atol=1e-3):
            raise ConfigurationError(
                f"{who}: the ONNX export of {model_path} does not reproduce the torch model "
                f"(max difference {float(np.abs(ours - theirs).max()):.3g}); use llm_parameters.backend='torch'"
            )
        del encoder
        publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s: exported %s to %s", who, model_path, dest)
