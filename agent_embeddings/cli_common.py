"""What the CLI's commands share: building the spec's manager and choosing its generator."""

from __future__ import annotations

from typing import Any

from .errors import UnknownGeneratorError

__all__ = ["load_manager", "pick_name"]


def load_manager(spec: str) -> Any:
    from .manager import EmbeddingGeneratorManager

    return EmbeddingGeneratorManager.from_subject_spec(spec)


def pick_name(manager: Any, name: str | None) -> str:
    if name is not None:
        manager.get(name)  # unknown names raise with the list of known ones
        return name
    names = manager.names()
    if len(names) != 1:
        listed = ", ".join(names) or "none"
        raise UnknownGeneratorError(f"the spec has {len(names)} embedding generators ({listed}); choose one with --name")
    return str(names[0])
