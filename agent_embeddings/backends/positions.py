"""How many tokens a local model can read: the bound on ``hf:`` items' ``max_seq_length``.

A transformer with learned position embeddings has one row per position: asked to read more
tokens than that, torch fails deep inside the model ("The size of tensor a (2002) must match the
size of tensor b (512)"), on the first long text rather than when the spec is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["config_position_limit", "position_limit"]


def position_limit(model: Any) -> int | None:
    """Positions a loaded sentence-transformers ``model`` can embed (None: no bound known).

    Its position-embedding table, less the padding offset that RoBERTa-like models start their
    positions at (XLM-R: 514 rows, 512 positions); else its config's ``max_position_embeddings``
    (rotary models have no table).
    """
    inner = getattr(model, "transformers_model", None)
    if inner is None:  # sentence-transformers before 5, or a model without a Transformer module
        first = next(iter(model), None) if hasattr(model, "__iter__") else None
        inner = getattr(first, "auto_model", None)
    if inner is None:
        return None
    for module in inner.modules():
        rows = getattr(getattr(module, "position_embeddings", None), "num_embeddings", None)
        if isinstance(rows, int):
            pad = getattr(module, "padding_idx", None)
            return rows - (pad + 1 if isinstance(pad, int) else 0)
    config = getattr(inner, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return _positive(getattr(config, "max_position_embeddings", None))


def config_position_limit(model_path: str) -> int | None:
    """``max_position_embeddings`` of the ``config.json`` in ``model_path`` (None when unreadable).

    For models whose limit was not recorded when they were exported to ONNX; an upper bound that
    is exact for BERT-like models and two positions high for RoBERTa-like ones.
    """
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _positive(config.get("max_position_embeddings")) if isinstance(config, dict) else None


def _positive(value: Any) -> int | None:
    # xlnet says -1 for "no limit"
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
