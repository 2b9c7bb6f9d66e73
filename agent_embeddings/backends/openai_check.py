"""``validate --check`` for ``openai:`` items: does the endpoint answer, take the key, serve the model?"""

from __future__ import annotations

from typing import Any

from ..errors import RemoteNotFoundError

__all__ = ["check_endpoint"]


def check_endpoint(generator: Any, timeout: float) -> str:
    """``GET /models`` on ``generator``'s endpoint (an :class:`OpenAIEmbeddingGenerator`), with its key:
    what it found, or the SDK's error for an unreachable endpoint, a refused key, a model not listed.
    """
    import openai

    # Per request, not with_options(): its copy of the client forgets that a keyless endpoint sends no key.
    headers = {"extra_headers": generator._extra_headers} if generator._extra_headers else {}
    try:
        served = [m.id for m in generator._client.models.list(timeout=timeout, **headers).data]
    except openai.NotFoundError:  # a compatible server without the route: reachable, model unchecked
        return f"{generator.endpoint} answers, but lists no models (GET /models: 404); {generator.model!r} is unchecked"
    except Exception as exc:
        raise generator._translate(exc, timeout) from None
    if generator.model not in served:
        shown = ", ".join(sorted(served)[:20]) + (", ..." if len(served) > 20 else "")
        raise RemoteNotFoundError(
            f"{generator._who()}: {generator.endpoint} does not serve {generator.model!r}; it lists: {shown or 'no model'}"
        )
    return f"{generator.endpoint} serves {generator.model!r}" + (", key accepted" if generator._api_key else "")
