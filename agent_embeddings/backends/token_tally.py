"""Usage token counts read from the tokenization an ``encode`` does anyway (sentence-transformers'
``preprocess``, the ONNX encoder's ``feed``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["Tally"]


class Tally:
    """Tokens per text, read from the attention masks ``encode`` builds anyway.

    Wraps the model's ``preprocess`` (sentence-transformers tokenizes each batch there): usage
    counts then cost a sum over a mask, not a second tokenizer pass on the model's critical path
    (~0.55 ms per 16 sentences here). ``open``, ``encode`` and ``counts`` run in the thread of one
    forward pass, and what a pass sees is kept per thread, so one tally serves every generator sharing
    the model, passes side by side included (ONNX Runtime's streams). A text ``encode`` did not show
    it (another version's code path) leaves ``counts`` None: the caller counts with the tokenizer.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def _seen(self) -> dict[str, int] | None:
        return getattr(self._local, "seen", None)

    @_seen.setter
    def _seen(self, value: dict[str, int] | None) -> None:
        self._local.seen = value

    def wrap(self, preprocess: Any) -> Any:
        def counted(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            features = preprocess(inputs, *args, **kwargs)
            seen, mask = self._seen, features.get("attention_mask") if isinstance(features, Mapping) else None
            if seen is not None and mask is not None and len(mask) == len(inputs):
                # the mask counts the prompt, [CLS]/[SEP] and no padding, cut at max_seq_length: what is computed
                # sum(1): a torch tensor's dim, a numpy array's axis
                seen.update((text, n) for text, n in zip(inputs, mask.sum(1).tolist()) if isinstance(text, str))
            return features

        return counted

    def open(self) -> None:
        self._seen = {}

    def counts(self, texts: list[str], prompt: str | None = None) -> list[int] | None:
        """Tokens of each of ``texts`` as tokenized since :meth:`open` (with ``prompt``: the texts as
        prompt + text, when that is what was tokenized); None when any was not seen."""
        seen, self._seen = self._seen, None
        if seen is None:
            return None
        if prompt and not all(t in seen for t in texts):
            texts = [prompt + t for t in texts]
        if any(t not in seen for t in texts):
            return None
        return [seen[t] for t in texts]
