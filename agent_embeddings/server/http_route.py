"""A FastAPI route answered by its endpoint as it is, for the hot ``POST /v1/embeddings``.

FastAPI's own route validates the body with its dependency machinery and serializes the answer
through ``jsonable_encoder``: for one sentence that cost more than the model. A :class:`DirectRoute`
is declared and documented in ``/openapi.json`` and ``/docs`` as any route is, but
``endpoint(request) -> Response`` parses, renders and answers its errors itself. It is the only handler of its path: editing the endpoint changes what is served.
:class:`Express` hands the route its requests in front of the router and the exception
middleware (it answers every error itself): about 30 us less of the app's ~300 us per request
(``python -m benchmarks.http_app_time``).

>>> app.router.add_api_route("/v1/embeddings", handler, methods=["POST"], route_class_override=DirectRoute,
...                          openapi_extra=json_body(EmbeddingRequest), response_model=EmbeddingResponse)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["DirectRoute", "Express", "json_body"]


class DirectRoute(APIRoute):
    """An :class:`APIRoute` whose endpoint takes the :class:`Request` and returns the :class:`Response`
    itself: no dependency injection, no body validation, no response model applied (both stay in the
    schema, see :func:`json_body`)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        assert not self.dependant.dependencies, f"{path}: a DirectRoute runs no dependencies"
        handler = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # Without FastAPI's per-request wrappers (exit stacks for dependencies, its exception
            # handling): the endpoint has no dependencies and answers every error itself.
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body (inline: FastAPI collects no
    component for a body it does not parse)."""
    schema = model.model_json_schema()
    assert "$defs" not in schema, f"{model.__name__} nests models: declare them as components"
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class Express:
    """Middleware handing a :class:`DirectRoute` its requests before the router gets them; every
    other request goes on to ``app``. The route's own ``app`` answers: one handler either way."""

    def __init__(self, app: Any, route: DirectRoute) -> None:
        self.app, self.route = app, route
        self.path, self.methods = route.path, frozenset(route.methods or ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] in self.methods:
            await self.route.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)
