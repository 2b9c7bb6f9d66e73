"""Request and response bodies of the OpenAI embeddings API, as pydantic models (for /docs too)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..results import GeneratorInfo

__all__ = [
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ErrorBody",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "Usage",
]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``. Unknown fields are ignored, as OpenAI-compatible servers do.

    Strict: ``"dimensions": "12"`` is a 400, as on OpenAI's API, not a guess.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts. Token-id arrays are refused: send strings."
    )
    model: str = Field(description="A served generator's name or alias (see GET /v1/models).")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="'float' (JSON numbers) or 'base64' (packed little-endian float32)."
    )
    dimensions: int | None = Field(default=None, gt=0, description="Shorten vectors to this many dimensions.")
    user: str | None = Field(default=None, description="End-user id (accepted and ignored).")
    input_type: Literal["query", "document"] | None = Field(
        default=None,
        description="Extension: what the texts are for; the model's query or document prompt is applied "
        "(as declared in the spec). Omitted: plain texts.",
    )


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    """One served generator, as ``GET /v1/models`` lists it (OpenAI's fields plus our own)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    dims: int | None = Field(default=None, description="Vector width, when known.")  # GeneratorInfo.width
    provider: str | None = None
    aliases: list[str] = Field(default_factory=list)
    normalize: bool | None = None
    space_id: str | None = Field(default=None, description="Short name of the embedding space, once known.")
    space: dict[str, Any] | None = Field(
        default=None,
        description="What the vectors are (model, precision, prompts, normalization, width, sequence limit): "
        "an openai: client of this server takes it as its own space.",
    )


    @classmethod
    def of(cls, info: GeneratorInfo, *, created: int) -> ModelCard:
        """The card of a generator's serving view."""
        space = info.space
        return cls(
            id=info.name, created=created, owned_by="agent-embeddings", dims=info.width, provider=info.provider,
            aliases=list(info.aliases), normalize=info.normalize, space_id=space.space_id if space is not None else None,
            space=space.model_dump() if space is not None else None,
        )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
