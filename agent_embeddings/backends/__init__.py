"""Built-in backends, each registered as a default plugin (see ``plugins.DEFAULT_PLUGINS``).

:data:`BUILTIN_BACKENDS` is the one list of them: the plugin manager registers their modules,
and ``agent_embeddings`` and ``agent_embeddings.generator`` export their classes (and the old
names users copy from the documentation) lazily from it. A new built-in backend is one module
with a ``register_embedding_backends`` hook, plus one line here.

>>> sorted(PUBLIC_CLASSES)[:2]
['AIOSEmbeddingGenerator', 'AIOSEmbeddings']
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUILTIN_BACKENDS", "PUBLIC_CLASSES", "Builtin"]


@dataclass(frozen=True)
class Builtin:
    """A built-in backend: the module that registers it and its public class (with older names)."""

    module: str
    cls: str
    aliases: tuple[str, ...] = ()


BUILTIN_BACKENDS: tuple[Builtin, ...] = (
    Builtin("agent_embeddings.backends.huggingface", "HuggingFaceEmbeddingGenerator"),
    Builtin("agent_embeddings.backends.openai", "OpenAIEmbeddingGenerator"),
    # AIOSEmbeddings: the client documentation's name, kept for code copied from it
    Builtin("agent_embeddings.backends.aios", "AIOSEmbeddingGenerator", aliases=("AIOSEmbeddings",)),
)

#: every public backend class name (aliases included) -> the module defining it
PUBLIC_CLASSES: dict[str, str] = {name: b.module for b in BUILTIN_BACKENDS for name in (b.cls, *b.aliases)}
