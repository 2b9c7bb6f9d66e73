"""Subject specs: loading from every source, and a specific error for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_embeddings import (
    ConfigurationError,
    EmbeddingGeneratorManager,
    ModelItem,
    SpecError,
    UnknownBackendError,
    build_embeddings_from_model_item,
    load_spec,
)
from agent_embeddings.specs import subject_spec_schema

HF = "hf:sentence-transformers/all-MiniLM-L6-v2"


def spec_with(*items: dict) -> dict:
    return {"subject_id": "t", "subject_type": "agent", "models": list(items)}


def hf_item(**params) -> dict:
    return {"llm_type": "embeddings", "llm_block_id": HF, "llm_parameters": params}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def load_error(tmp_path: Path, data) -> str:
    with pytest.raises(SpecError) as info:
        EmbeddingGeneratorManager.from_subject_spec(write(tmp_path, data))
    return str(info.value)


# -- loading ------------------------------------------------------------------------------
def test_load_from_path_json_string_and_mapping_agree(default_spec: Path):
    text = default_spec.read_text()
    from_path = load_spec(default_spec)
    assert from_path == load_spec(str(default_spec)) == load_spec(text) == load_spec(json.loads(text))
    item = from_path.models[0]
    assert (item.prefix, item.model, item.name) == ("hf", "sentence-transformers/all-MiniLM-L6-v2", "hf-minilm")
    assert item.llm_selection_query == {}


def test_documented_example_specs_load(root: Path):
    retriever = load_spec(root / "specs" / "agent-retriever.json")
    assert [m.prefix for m in retriever.models] == ["openai", "hf", "aios"]
    assert retriever.models[2].llm_selection_query == {"tenant": "org-123", "tier": "prod"}
    rag = load_spec(root / "specs" / "agent-rag.json")
    assert rag.subject_id == "agent-rag" and len(rag.models) == 2


def test_non_embedding_items_are_kept_and_skipped(tmp_path: Path):
    chat = {"llm_type": "chat", "llm_block_id": "openai:gpt-4o", "llm_parameters": {"temperature": 0.2}}
    spec = load_spec(spec_with(chat, hf_item()))
    assert [m.llm_type for m in spec.models] == ["chat", "embeddings"]
    manager = EmbeddingGeneratorManager.from_subject_spec(write(tmp_path, spec_with(chat, hf_item())))
    assert manager.names() == [HF]  # the chat item is not built (its prefix is not even checked)
    assert manager.spec is not None and len(manager.spec.models) == 2


def test_unknown_top_level_sections_are_kept():
    spec = load_spec({**spec_with(hf_item()), "tools": [{"name": "search"}]})
    assert spec.model_extra == {"tools": [{"name": "search"}]}


def test_schema_file_is_in_sync(root: Path):
    shipped = json.loads((root / "specs" / "subject-spec.schema.json").read_text())
    assert shipped == subject_spec_schema(), "regenerate: agent-embeddings schema > specs/subject-spec.schema.json"


def test_shipped_specs_validate_against_the_schema(root: Path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = subject_spec_schema()
    for path in sorted((root / "specs").glob("*.json")):
        if path.name != "subject-spec.schema.json":
            jsonschema.validate(json.loads(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"subject_id": "x", "models": [{"llm_type": "embeddings"}]}, schema)


# -- bad input, one test each --------------------------------------------------------------
def test_missing_file(tmp_path: Path):
    with pytest.raises(SpecError, match=r"nope\.json: spec file not found"):
        load_spec(tmp_path / "nope.json")


def test_invalid_json_names_file_line_and_column(tmp_path: Path):
    path = write(tmp_path, '{\n  "subject_id": "x",\n  "models": [,]\n}')
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert "line 3, column 14" in str(info.value)


def test_invalid_json_string():
    with pytest.raises(SpecError, match=r"<json string>: invalid JSON at line 1, column \d+"):
        load_spec('{"subject_id": ')


def test_spec_not_an_object(tmp_path: Path):
    assert "must be a JSON object, got list" in load_error(tmp_path, "[1, 2]")


def test_models_not_a_list(tmp_path: Path):
    message = load_error(tmp_path, {"subject_id": "x", "models": {"llm_block_id": HF}})
    assert "spec.json: models: must be a list of model items, got dict" in message


def test_item_missing_block_id(tmp_path: Path):
    message = load_error(tmp_path, spec_with(hf_item(), {"llm_type": "embeddings"}))
    assert "spec.json: models[1].llm_block_id: required field is missing" in message


def test_block_id_without_prefix(tmp_path: Path):
    item = {"llm_type": "embeddings", "llm_block_id": "all-MiniLM-L6-v2"}
    message = load_error(tmp_path, spec_with(item))
    assert "models[0] ('all-MiniLM-L6-v2').llm_block_id" in message
    assert "has no backend prefix; expected 'prefix:model'" in message


def test_block_id_with_empty_model(tmp_path: Path):
    message = load_error(tmp_path, spec_with({"llm_type": "embeddings", "llm_block_id": "hf:  "}))
    assert "models[0] ('hf:  ').llm_block_id" in message and "names no model after 'hf:'" in message


def test_unknown_prefix_lists_known_backends(tmp_path: Path):
    item = {"llm_type": "embeddings", "llm_block_id": "cohere:embed-v3"}
    with pytest.raises(UnknownBackendError) as info:
        EmbeddingGeneratorManager.from_subject_spec(write(tmp_path, spec_with(hf_item(), item)))
    message = str(info.value)
    assert "spec.json: models[1] ('cohere:embed-v3')" in message
    assert "unknown backend prefix 'cohere:'" in message and "known backends: " in message and "hf:" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("batch_size", "64", "llm_parameters.batch_size: Input should be a valid integer (got str '64')"),
        ("batch_size", 0, "llm_parameters.batch_size: Input should be greater than 0 (got int 0)"),
        ("normalize", "yes", "llm_parameters.normalize: Input should be a valid boolean (got str 'yes')"),
        ("dims", 384.5, "llm_parameters.dims: Input should be a valid integer (got float 384.5)"),
        ("device", "gpu", "llm_parameters.device: unknown device 'gpu'; expected one of cpu, cuda, cuda:N"),
    ],
)
def test_wrong_parameter_types(tmp_path: Path, field: str, value, expected: str):
    message = load_error(tmp_path, spec_with(hf_item(**{field: value})))
    assert message.startswith(f"{tmp_path / 'spec.json'}: models[0] ('{HF}'): ")
    assert expected in message


def test_unknown_parameter_key_lists_accepted_keys(tmp_path: Path):
    message = load_error(tmp_path, spec_with(hf_item(batchsize=64)))
    assert "llm_parameters.batchsize: unknown field" in message
    assert "accepted keys for 'hf:': " in message
    for key in ("allow_download", "batch_size", "device", "dimensions", "dims", "max_seq_length", "normalize"):
        assert key in message


def test_unknown_item_field(tmp_path: Path):
    message = load_error(tmp_path, spec_with({**hf_item(), "llm_paramters": {}}))
    assert "models[0] ('hf:sentence-transformers/all-MiniLM-L6-v2').llm_paramters: unknown field (did you mean " \
        "'llm_parameters'?)" in message


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"batchsize": 64}, "llm_parameters.batchsize: unknown field (did you mean 'batch_size'?); accepted keys"),
        ({"normalise": True}, "llm_parameters.normalise: unknown field (did you mean 'normalize'?)"),
        ({"retry": {"attemps": 3}}, "llm_parameters.retry.attemps: unknown field (did you mean 'attempts'?)"),
        ({"cache": {"kindd": "memory"}}, "llm_parameters.cache.kindd: unknown field (did you mean 'kind'?)"),
        ({"colour": "blue"}, "llm_parameters.colour: unknown field; accepted keys for 'hf:': "),  # nothing close
    ],
)
def test_a_misspelt_key_gets_a_did_you_mean(tmp_path: Path, params: dict, expected: str):
    message = load_error(tmp_path, spec_with(hf_item(**params)))
    assert expected in message


def test_duplicate_names(tmp_path: Path):
    first = {**hf_item(), "name": "embedder"}
    second = {**hf_item(batch_size=8), "llm_block_id": "hf:other/model", "name": "embedder"}
    message = load_error(tmp_path, spec_with(first, second))
    assert "models[1] ('hf:other/model'): name 'embedder' is already used by models[0]" in message


def test_same_block_id_twice_needs_names(tmp_path: Path):
    message = load_error(tmp_path, spec_with(hf_item(), hf_item(batch_size=8)))
    assert "models[0]" in message and "several items use this block id; give each of them a distinct 'name'" in message


def test_dims_contradicting_dimensions(tmp_path: Path):
    message = load_error(tmp_path, spec_with(hf_item(dims=384, dimensions=128)))
    assert "dims=384 contradicts dimensions=128" in message


def test_factory_rejects_non_embedding_items():
    with pytest.raises(SpecError, match=r"llm_type is 'chat'; only 'embeddings' items build embedding generators"):
        build_embeddings_from_model_item({"llm_type": "chat", "llm_block_id": "openai:gpt-4o"})


def test_factory_rejects_malformed_dicts():
    with pytest.raises(SpecError, match=r"model item: llm_type: required field is missing"):
        build_embeddings_from_model_item({"llm_block_id": HF})
    with pytest.raises(SpecError, match=r"expected a ModelItem or a dict, got str"):
        build_embeddings_from_model_item(HF)  # type: ignore[arg-type]


def test_secret_values_are_not_echoed_in_errors():
    # a literal api_key of the wrong type must not be printed back
    from agent_embeddings.specs import GeneratorParams, parse_params

    class WithKey(GeneratorParams):
        api_key: str | None = None

    item = ModelItem(llm_type="embeddings", llm_block_id="x:y", llm_parameters={"api_key": 987654321})
    with pytest.raises(SpecError) as info:
        parse_params(WithKey, item)
    assert "api_key" in str(info.value) and "987654321" not in str(info.value)


def test_configuration_errors_from_a_backend_name_the_spec_location(root: Path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError) as info:
        EmbeddingGeneratorManager.from_subject_spec(root / "specs" / "agent-retriever.json")
    message = str(info.value)
    assert message.startswith(f"{root / 'specs' / 'agent-retriever.json'}: models[0] ('openai:text-embedding-3-small'): ")
    assert "no API key" in message


# -- issue 19, finding 20: hostile spec files get a SpecError naming the file, the item and the field --
def test_finding_20_deep_nesting_is_a_spec_error(tmp_path: Path):
    deep = '{"subject_id": "t", "models": [' + "[" * 100_000 + "]" * 100_000 + "]}"
    assert load_error(tmp_path, deep) == f"{tmp_path / 'spec.json'}: JSON nested more than 64 levels deep"
    # Deep enough to pass the JSON parser, deep enough to overflow the recursive walks after it
    # (pydantic, the redaction of secrets in repr()) before the bound.
    nested: dict = {}
    for _ in range(900):
        nested = {"a": nested}
    item = {"llm_type": "embeddings", "llm_block_id": HF, "llm_selection_query": nested}
    message = load_error(tmp_path, spec_with(item))
    assert message == f"{tmp_path / 'spec.json'}: models[0].llm_selection_query.a.a.a...: nested more than 64 levels deep"
    loop: dict = {"subject_id": "t", "models": []}
    loop["tools"] = [loop]  # a mapping from Python may even be cyclic
    with pytest.raises(SpecError, match=r"^<mapping>: tools\[0\]\.tools\[0\]\.tools.*nested more than 64 levels"):
        load_spec(loop)
    shallow = spec_with({**item, "llm_selection_query": {"a": {"b": {"c": [[{"d": 1}]]}}}})
    assert load_spec(shallow).models[0].llm_selection_query["a"]["b"]["c"] == [[{"d": 1}]]


def test_finding_20_a_number_too_long_to_read_is_a_spec_error(tmp_path: Path):
    text = '{"subject_id": "t",\n "models": [{"llm_type": "embeddings", "llm_block_id": "%s",\n' % HF
    text += '   "llm_parameters": {"batch_size": ' + "9" * 5000 + "}}]}"
    message = load_error(tmp_path, text)
    assert message == f"{tmp_path / 'spec.json'}: a number of 5000 digits at line 3, column 37 is too long"
    with pytest.raises(SpecError, match=r"^<json string>: a number of 4301 digits at line 1, column 16"):
        load_spec('{"subject_id": -' + "1" * 4301 + "}")
    big = load_spec(spec_with(hf_item(dims=10**30)) | {"extra": 10**4000})  # long, but not too long: kept
    assert big.model_extra == {"extra": 10**4000}


def test_finding_20_a_misspelt_llm_type_is_named_with_a_suggestion(tmp_path: Path, caplog):
    typo = {"llm_type": "embedings", "llm_block_id": HF}
    message = load_error(tmp_path, spec_with(typo, {"llm_type": "chat", "llm_block_id": "openai:gpt-4o"}))
    assert message == (
        f"{tmp_path / 'spec.json'}: no embedding generator in this spec; every item is skipped: "
        f"models[0] ('{HF}'): llm_type 'embedings' is not 'embeddings' (did you mean 'embeddings'?); "
        "models[1] ('openai:gpt-4o'): llm_type 'chat' is not 'embeddings'"
    )
    assert load_error(tmp_path, spec_with()).endswith("spec.json: no embedding generator in this spec; models is empty")
    # Beside a good item, a near miss builds nothing and is logged; another type is skipped quietly.
    with caplog.at_level("WARNING", logger="agent_embeddings.manager"):
        manager = EmbeddingGeneratorManager.from_subject_spec(
            write(tmp_path, spec_with({**hf_item(), "name": "ok"}, {**typo, "llm_type": "Embedding", "name": "lost"},
                                      {"llm_type": "chat", "llm_block_id": "openai:gpt-4o"}))
        )
    assert manager.names() == ["ok"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'spec.json'}: models[1] ('{HF}'): llm_type 'Embedding' is not 'embeddings' "
        "(did you mean 'embeddings'?); this item builds no generator"
    ]


def test_the_accepted_keys_are_what_a_spec_may_give(tmp_path: Path):
    """The shared settings (cache, retry: left out of model_dump) are listed; code-only objects are not."""
    item = {"llm_type": "embeddings", "llm_block_id": "openai:m",
            "llm_parameters": {"base_url": "http://127.0.0.1:9/v1", "http_transprt": 1}}
    message = load_error(tmp_path, spec_with(item))
    keys = message.split("accepted keys for 'openai:': ", 1)[1].split(", ")
    assert {"cache", "retry", "fallback", "micro_batching", "api_key_ref", "timeout_s"} <= set(keys)
    assert "http_transport" not in message  # not in the list, not as a did-you-mean
