"""The serving core on its own (no socket, no model): what both servers answer, before their wire."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.routing import APIRoute

from agent_embeddings import EmbeddingGeneratorManager
from agent_embeddings.errors import BackendUnavailableError
from agent_embeddings.results import GeneratorInfo
from agent_embeddings.server import grpc as grpc_server
from agent_embeddings.server.config import ServerConfig
from agent_embeddings.server.http_app import WORDS, create_app
from agent_embeddings.server.http_route import DirectRoute
from agent_embeddings.server.openai_schema import ModelCard
from agent_embeddings.server.serving import BackendFailed, EmbedQuery, ServeError, serve_embed
from agent_embeddings.vectors import l2_normalize
from tests.fakes import CharStats, Flaky


@pytest.fixture
def manager() -> EmbeddingGeneratorManager:
    manager = EmbeddingGeneratorManager()
    manager.register_generator("chars", CharStats(normalize=True), aliases=["c"])
    return manager


async def test_dimensions_shorten_the_raw_vectors_then_normalize(manager: EmbeddingGeneratorManager) -> None:
    raw = manager.encode("chars", ["abcdefgh", "aab"], normalize=False)
    served = await serve_embed(manager, EmbedQuery("c", ["abcdefgh", "aab"], dimensions=3), ServerConfig(), WORDS)
    assert served.model == "chars" and served.normalized and served.prompt_tokens == 2
    assert np.abs(served.vectors - l2_normalize(raw[:, :3])).max() <= 1e-6
    plain = await serve_embed(manager, EmbedQuery("chars", ["aab"], dimensions=3, normalize=False), ServerConfig(), WORDS)
    assert plain.vectors.tolist() == raw[1:, :3].tolist() and not plain.normalized
    full = await serve_embed(manager, EmbedQuery("chars", ["aab"]), ServerConfig(), WORDS)
    assert full.vectors.shape == (1, 8)  # no dimensions: the model's own width, never narrowed


@pytest.mark.parametrize(
    ("query", "config", "reason", "code", "needle"),
    [
        (EmbedQuery("nope", ["x"]), ServerConfig(), "not_found", "model_not_found", "served models: chars"),
        (EmbedQuery("chars", []), ServerConfig(), "invalid", None, "empty list"),
        (EmbedQuery("chars", ["x"] * 3), ServerConfig(max_inputs=2), "too_large", "too_many_inputs", "at most 2"),
        (EmbedQuery("chars", ["ok", "x" * 9]), ServerConfig(max_input_chars=8), "too_large", "input_too_long",
         "input[1] has 9 characters"),
        (EmbedQuery("chars", ["ok", ""]), ServerConfig(), "invalid", None, "input[1] is an empty string"),
        (EmbedQuery("chars", ["x"], dimensions=9), ServerConfig(), "invalid", None, "larger than the 8 dimensions"),
    ],
)
async def test_refusals_say_what_to_fix(manager, query, config, reason, code, needle) -> None:
    manager.encode("chars", ["warm"])  # the width is known
    with pytest.raises(ServeError) as refused:
        await serve_embed(manager, query, config, WORDS)
    assert (refused.value.reason, refused.value.code) == (reason, code) and needle in refused.value.message


async def test_each_wire_words_the_same_check_its_own_way(manager: EmbeddingGeneratorManager) -> None:
    with pytest.raises(ServeError, match=r"inputs\[0\] has 3 characters.*at most 2 per text$"):
        await serve_embed(manager, EmbedQuery("", ["abc"]), ServerConfig(max_input_chars=2), grpc_server.WORDS)
    manager.register_generator("other", CharStats())
    with pytest.raises(ServeError, match="model is empty and this server serves 2 models"):
        await serve_embed(manager, EmbedQuery("", ["abc"]), ServerConfig(), grpc_server.WORDS)
    with pytest.raises(ServeError, match="The model '' does not exist"):  # OpenAI's API has no default model
        await serve_embed(manager, EmbedQuery("", ["abc"]), ServerConfig(), WORDS)


async def test_a_backend_failure_is_handed_to_the_transport() -> None:
    manager = EmbeddingGeneratorManager()
    manager.register_generator("down", Flaky(CharStats(), failures=99, retry={"attempts": 1}))
    with pytest.raises(BackendFailed) as failed:
        await serve_embed(manager, EmbedQuery("down", ["x"]), ServerConfig(), WORDS)
    assert failed.value.model == "down" and isinstance(failed.value.cause, BackendUnavailableError)


def test_the_serving_view_and_its_card(manager: EmbeddingGeneratorManager) -> None:
    info = GeneratorInfo.of(manager.get("chars"), name="chars", aliases=["c"])
    assert (info.name, info.aliases, info.provider, info.model, info.normalize) == ("chars", ("c",), "test",
                                                                                    "char-stats", True)
    manager.encode("chars", ["x"])
    (listed,) = manager.list_generators()
    assert listed.width == listed.dims == 8
    card = ModelCard.of(listed, created=1)
    assert (card.id, card.dims, card.aliases, card.created) == ("chars", 8, ["c"], 1)


def test_one_handler_serves_and_documents_the_embeddings_route(manager: EmbeddingGeneratorManager) -> None:
    app = create_app(manager)
    routes = [r for r in app.routes if isinstance(r, APIRoute) and r.path == "/v1/embeddings"]
    assert len(routes) == 1 and isinstance(routes[0], DirectRoute)
    operation = app.openapi()["paths"]["/v1/embeddings"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"input", "model", "dimensions", "input_type"} <= set(body["properties"])
    assert "EmbeddingResponse" in str(operation["responses"]["200"])
