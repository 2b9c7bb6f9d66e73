"""Subject specs: the JSON an agent uses to declare the embedding models it needs.

A spec holds ``ModelItem`` entries; the ``llm_block_id`` prefix (``hf:``, ``openai:``,
``aios:`` or a plugin's) picks the backend, and each backend validates ``llm_parameters``
with its own pydantic model (a subclass of :class:`GeneratorParams`).

>>> spec = load_spec({"subject_id": "demo", "models": [
...     {"llm_type": "embeddings", "llm_block_id": "hf:sentence-transformers/all-MiniLM-L6-v2"}]})
>>> spec.models[0].prefix, spec.models[0].model
('hf', 'sentence-transformers/all-MiniLM-L6-v2')
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from .batching import MicroBatching
from .cache import CacheConfig
from .errors import SpecError
from .redaction import is_secret_name, redact, redact_params, remember_params
from .retry import RetryPolicy

__all__ = [
    "EMBEDDINGS",
    "GeneratorParams",
    "ModelItem",
    "SpecSource",
    "SubjectSpec",
    "load_spec",
    "parse_params",
    "require_embeddings",
    "skipped_items",
    "spec_origin",
    "subject_spec_schema",
]

EMBEDDINGS = "embeddings"
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")

SpecSource = Union[str, "os.PathLike[str]", Mapping[str, Any]]


class ModelItem(BaseModel):
    """One model declared by a subject spec (the documented ``ModelItem`` fields, plus ``name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm_type: str = Field(description='Kind of model; "embeddings" for embedding generators.')
    llm_block_id: str = Field(
        description='Backend prefix and target, e.g. "openai:text-embedding-3-small", '
        '"hf:sentence-transformers/all-MiniLM-L6-v2", "aios:embeddings-prod".'
    )
    llm_selection_query: dict[str, Any] = Field(
        default_factory=dict,
        description="Selector (region, tenant, tier, ...) a resolver plugin may use to pick a deployment.",
    )
    llm_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Backend-specific settings, validated by the backend's parameter model."
    )
    name: str | None = Field(
        default=None, min_length=1, description="Name the generator is registered under in the manager."
    )

    @field_validator("llm_block_id")
    @classmethod
    def _check_block_id(cls, value: str) -> str:
        prefix, sep, model = value.partition(":")
        if not sep:
            raise ValueError(f"block id {value!r} has no backend prefix; expected 'prefix:model', e.g. 'hf:...'")
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"block id {value!r} has an invalid prefix {prefix!r}; expected lowercase letters/digits")
        if not model.strip():
            raise ValueError(f"block id {value!r} names no model after '{prefix}:'")
        return value

    @model_validator(mode="after")
    def _remember_literal_secrets(self) -> ModelItem:
        # A key written into a spec (discouraged, but documented) is redacted from every log line.
        remember_params(self.llm_parameters)
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() and str() of an item, and of a spec holding it, never show a secret.
        for name, value in super().__repr_args__():
            yield name, redact_params(value) if name in ("llm_parameters", "llm_selection_query") else value

    @property
    def prefix(self) -> str:
        """The backend prefix, e.g. ``"hf"``."""
        return self.llm_block_id.partition(":")[0]

    @property
    def model(self) -> str:
        """The part after the prefix, e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``."""
        return self.llm_block_id.partition(":")[2]

    @property
    def is_embeddings(self) -> bool:
        return self.llm_type == EMBEDDINGS


class SubjectSpec(BaseModel):
    """An agent's subject spec. Unknown top-level sections are kept (other tools own them)."""

    model_config = ConfigDict(extra="allow")

    subject_id: str = Field(description="Identifier of the agent or subject.")
    subject_type: str = Field(default="agent", description='Kind of subject, e.g. "agent".')
    models: list[ModelItem] = Field(description="Models the subject uses; non-embedding items are kept and skipped.")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Sections owned by other tools are kept verbatim, but shown with their secrets masked.
        for name, value in super().__repr_args__():
            yield name, value if name in ("subject_id", "subject_type", "models") else redact_params(value)

    @property
    def embedding_items(self) -> list[tuple[int, ModelItem]]:
        """``(index, item)`` for each embeddings item, index being its place in ``models``."""
        return [(i, item) for i, item in enumerate(self.models) if item.is_embeddings]


class GeneratorParams(BaseModel):
    """``llm_parameters`` common to every backend; each backend subclasses this.

    ``strict`` so that ``"normalize": "yes"`` or ``"batch_size": "64"`` are errors, not guesses.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    normalize: bool = Field(default=True, description="L2-normalize vectors to unit length.")
    dims: PositiveInt | None = Field(
        default=None, description="Expected vector width; a backend delivering another width is an error."
    )
    dimensions: PositiveInt | None = Field(
        default=None, description="Shorten vectors to this many dimensions (Matryoshka), then re-normalize."
    )
    batch_size: PositiveInt = Field(default=32, description="Texts per backend call.")
    # exclude=True: applied by AbstractEmbeddingGenerator.from_model_item, so backend
    # constructors fed with model_dump() need not know about it.
    micro_batching: MicroBatching | None = Field(
        default=None,
        exclude=True,
        description="Coalesce concurrent small calls into one backend batch "
        "(default: on for local models, off for remote ones).",
    )
    # Reliability settings, also applied by from_model_item (exclude=True, as micro_batching).
    retry: RetryPolicy | None = Field(
        default=None,
        exclude=True,
        description="Retries of transient failures (unavailable, timeout, rate limited): attempts, backoff, "
        "deadline. openai: and aios: map it onto their client's own retries.",
    )
    cache: CacheConfig | None = Field(
        default=None, exclude=True, description="Opt-in vector cache: in memory (LRU) or on disk (SQLite)."
    )
    fallback: str | None = Field(
        default=None,
        min_length=1,
        exclude=True,
        description="Name of another generator of the spec to use when this one fails after its retries; "
        "it must be embedding-compatible (same model_id, dims, normalization).",
    )
    allow_incompatible_fallback: bool = Field(
        default=False,
        exclude=True,
        description="Accept a fallback whose vectors live in another space (different model, dims or "
        "normalization). Off by default: mixing spaces silently breaks similarity search.",
    )
    model_id: str | None = Field(
        default=None,
        min_length=1,
        exclude=True,
        description="Identity of the model behind the vectors (default: the block id's model), for fallback "
        "compatibility and cache keys, e.g. the local model an aios: block serves.",
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() of any backend's parameters: secret fields and header values masked, URLs displayed.
        for name, value in super().__repr_args__():
            yield name, value if name is None else redact_params({name: value})[name]

    @field_validator("micro_batching", mode="before")
    @classmethod
    def _micro_batching_switch(cls, value: Any) -> Any:
        # "micro_batching": false / true switches it, as {"enabled": false} does
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch(cls, value: Any) -> Any:
        # "cache": true is the default memory LRU; false is no cache
        if value is True:
            return {}
        return None if value is False else value


P = TypeVar("P", bound=GeneratorParams)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(err: Any) -> str:
    """One pydantic error as 'field: problem (got X)', hiding secret values."""
    loc = err["loc"]
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{_loc(loc)}: unknown field"
    if kind == "missing":
        return f"{_loc(loc)}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and not _holds_secrets(loc) and kind not in ("value_error",):
        got = err["input"]
        shown = redact(repr(got))  # redacted before it is cut: a secret cut in two is not recognised
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        msg += f" (got {type(got).__name__} {shown})"
    elif "input" in err and kind not in ("value_error",):
        msg += f" (got {type(err['input']).__name__}; the value is not shown)"
    return f"{_loc(loc)}: {msg}" if loc else msg


def _holds_secrets(loc: tuple[Any, ...]) -> bool:
    """A field whose wrong value is never echoed: a secret, a reference to one (a key pasted in its
    place is the common mistake), headers (any value may be a credential), a URL (user info)."""
    for part in loc:
        name = str(part).lower()
        if is_secret_name(part) or name.endswith("_ref") or "header" in name or "url" in name:
            return True
    return False


def code_only(field: FieldInfo) -> bool:
    """A field only code may give (an object, e.g. an httpx transport): not a spec key.

    Marked ``json_schema_extra={"code_only": True}``; ``exclude=True`` means something else here
    (left out of ``model_dump``, applied by ``from_model_item``), so it cannot be the mark.
    """
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("code_only") is True


def spec_keys(model: type[BaseModel]) -> list[str]:
    """The ``llm_parameters`` keys a spec may give for a Params model, sorted."""
    return sorted(k for k, f in model.model_fields.items() if not code_only(f))


def did_you_mean(model: type[BaseModel], err: Any) -> str:
    """`` (did you mean 'normalize'?)`` for an unknown key close to a field of ``model`` (nested
    models followed along the error's location), else ``""``."""
    if err["type"] != "extra_forbidden":
        return ""
    current: type[BaseModel] | None = model
    for part in err["loc"][:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(str(part))
        current = _model_in(field.annotation) if field is not None else None
    if current is None:
        return ""
    names = [n for name, f in current.model_fields.items() if not code_only(f) for n in (name, f.alias) if n]
    found = difflib.get_close_matches(str(err["loc"][-1]), names, n=1, cutoff=0.6)
    return f" (did you mean {found[0]!r}?)" if found else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: ``RetryPolicy | None``, ``list[ModelItem]``..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, *, where: str) -> str:
    lines = [_describe(err) for err in exc.errors()]
    return f"{where}: " + "; ".join(lines)


def parse_params(model: type[P], item: ModelItem, *, where: str | None = None) -> P:
    """Validate ``item.llm_parameters`` with a backend's parameter ``model``.

    Errors name the item and the field; unknown keys list the accepted ones.
    """
    where = where or f"{item.llm_block_id!r}"
    try:
        return model.model_validate(item.llm_parameters)
    except ValidationError as exc:
        problems = []
        unknown = False
        for err in exc.errors():
            if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:  # the list below is of top-level keys
                unknown = True
            problems.append("llm_parameters." + _describe(err) + did_you_mean(model, err))
        message = f"{where}: " + "; ".join(problems)
        if unknown:
            message += f"; accepted keys for '{item.prefix}:': {', '.join(spec_keys(model))}"
        raise SpecError(message) from None


#: Levels of nesting a spec may have. Real specs have five or six (models[0].llm_parameters.cache.kind);
#: the bound keeps a hostile file from reaching Python's recursion limit in the JSON parser, in
#: pydantic or in the redaction of secrets, which walk the structure recursively.
MAX_DEPTH = 64


class _LongNumber(Exception):
    def __init__(self, digits: str) -> None:
        self.digits = digits


def _parse_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # over Python's limit on digits (4300 by default): no spec number is that long
        raise _LongNumber(digits) from None


def _parse_json(text: str, origin: str) -> Any:
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{origin}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise SpecError(f"{origin}: JSON nested more than {MAX_DEPTH} levels deep") from None
    except _LongNumber as exc:
        at = text.find(exc.digits)
        line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
        raise SpecError(
            f"{origin}: a number of {len(exc.digits.lstrip('-'))} digits at line {line}, column {column} is too long"
        ) from None


def _check_depth(data: Any, origin: str) -> None:
    """Refuse structures nested more than MAX_DEPTH levels (iteratively: the check cannot overflow)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, Mapping):
            children = list(value.items())
        elif isinstance(value, (list, tuple)):
            children = list(enumerate(value))
        else:
            continue
        if len(loc) >= MAX_DEPTH:
            shown = _loc(loc[:6]) + "..."
            raise SpecError(f"{origin}: {shown}: nested more than {MAX_DEPTH} levels deep")
        stack.extend((child, (*loc, key)) for key, child in children)


def read_spec_source(source: SpecSource) -> tuple[Any, str]:
    """Return ``(data, origin)`` for a path, a JSON string or a mapping."""
    if isinstance(source, Mapping):
        return dict(source), "<mapping>"
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return _parse_json(source, "<json string>"), "<json string>"
    if not isinstance(source, (str, os.PathLike)):
        raise SpecError(f"a spec must be a path, a JSON string or a mapping, not {type(source).__name__}")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec file: {exc}") from None
    return _parse_json(text, str(path)), str(path)


def spec_origin(source: SpecSource) -> str:
    """How errors name a spec source: its path, ``<json string>`` or ``<mapping>``."""
    if isinstance(source, Mapping):
        return "<mapping>"
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return "<json string>"
    return str(source)


def load_spec(source: SpecSource) -> SubjectSpec:
    """Load and validate a subject spec from a file path, a JSON string or a mapping.

    Errors are :class:`SpecError` naming the file, the item (``models[i]``) and the field.
    """
    data, origin = read_spec_source(source)
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a subject spec must be a JSON object, got {type(data).__name__}")
    _check_depth(data, origin)
    try:
        return SubjectSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            text = _describe(err) + did_you_mean(SubjectSpec, err)
            if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
                item = data["models"][loc[1]]
                block = item.get("llm_block_id") if isinstance(item, dict) else None
                if block:
                    text = text.replace(_loc(loc[:2]), f"{_loc(loc[:2])} ({block!r})", 1)
            if loc == ("models",) and err["type"] == "list_type":
                text = f"models: must be a list of model items, got {type(data.get('models')).__name__}"
            problems.append(text)
        raise SpecError(f"{origin}: " + "; ".join(problems)) from None


def skipped_items(spec: SubjectSpec) -> list[tuple[str, bool]]:
    """``(why, near_miss)`` for each item that builds no generator: its place, block id and type.

    ``near_miss``: the type is a likely typo of "embeddings" (``"embedings"``, ``"Embedding"``),
    which would otherwise drop a generator without a word; ``why`` then says "did you mean".
    """
    out = []
    for index, item in enumerate(spec.models):
        if item.is_embeddings:
            continue
        why = f"models[{index}] ({item.llm_block_id!r}): llm_type {item.llm_type!r} is not {EMBEDDINGS!r}"
        near = bool(difflib.get_close_matches(item.llm_type.strip().lower(), [EMBEDDINGS], n=1, cutoff=0.75))
        out.append((why + (f" (did you mean {EMBEDDINGS!r}?)" if near else ""), near))
    return out


def require_embeddings(spec: SubjectSpec, origin: str) -> None:
    """Raise :class:`SpecError` when ``spec`` declares no embeddings item, saying which items were skipped.

    What serves or embeds from a spec (``serve``, ``embed``, ``bulk``, ``validate``) calls it: a spec
    whose only item has a misspelt ``llm_type`` would otherwise serve nothing.
    """
    if spec.embedding_items:
        return
    skipped = "; ".join(why for why, _ in skipped_items(spec))
    detail = f"every item is skipped: {skipped}" if skipped else "models is empty"
    raise SpecError(f"{origin}: no embedding generator in this spec; {detail}")


def subject_spec_schema() -> dict[str, Any]:
    """JSON Schema of the subject spec (shipped as ``specs/subject-spec.schema.json``)."""
    schema = SubjectSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://agent-embeddings.dev/schemas/subject-spec.schema.json"
    return schema
