"""The AIOS protocol: generated code is reproducible, conversions are exact, errors map right."""

from __future__ import annotations

import filecmp
import importlib.util
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from agent_embeddings.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    InvalidInputError,
    RateLimitError,
    RemoteNotFoundError,
    UnknownGeneratorError,
)
from agent_embeddings.manager import GeneratorInfo
from agent_embeddings.protocol.convert import (
    embed_request,
    embed_response,
    error_from_rpc,
    info_from_response,
    info_response,
    parse_embed_request,
    parse_embed_response,
    pb,
    selection_map,
    status_for_error,
)

GEN = Path("agent_embeddings/protocol/gen")


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="needs grpcio-tools (the dev extra)")
def test_regenerating_the_protocol_changes_nothing(root: Path, tmp_path: Path):
    subprocess.run(
        [sys.executable, str(root / "scripts/generate_protos.py"), "--out", str(tmp_path)], check=True, capture_output=True
    )
    committed = sorted(p.relative_to(root / GEN) for p in (root / GEN).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert fresh == committed
    _, mismatch, errors = filecmp.cmpfiles(root / GEN, tmp_path, [str(p) for p in fresh], shallow=False)
    assert not mismatch and not errors, f"regenerate with `make protos`: {mismatch or errors}"


def test_generated_code_imports_as_part_of_the_package(root: Path):
    text = (root / GEN / "aios/embeddings/v1/embeddings_pb2_grpc.py").read_text()
    assert "from agent_embeddings.protocol.gen.aios.embeddings.v1 import embeddings_pb2" in text
    assert "grpc_tools" not in text


def test_importing_the_sdk_or_building_a_spec_does_not_import_grpc(default_spec: Path):
    code = (
        "import sys, agent_embeddings\n"
        "from agent_embeddings import EmbeddingGeneratorManager\n"
        f"EmbeddingGeneratorManager.from_subject_spec({str(default_spec)!r})\n"
        "from agent_embeddings.plugins import get_backends; assert 'aios' in get_backends()\n"
        "bad = [m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', 'google.protobuf'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vectors_travel_as_packed_little_endian_float32():
    matrix = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    response = embed_response(
        matrix, model="m", normalized=False, prompt_tokens=None, request_id="r", total_us=3, inference_us=2
    )
    assert response.vectors == matrix.astype("<f4").tobytes() and (response.rows, response.cols) == (5, 7)
    wire = pb.EmbedResponse.FromString(response.SerializeToString())
    result = parse_embed_response(wire, 5, who="t")
    assert np.array_equal(result.vectors, matrix) and result.vectors.dtype == np.float32
    assert result.prompt_tokens is None  # unset differs from 0
    assert parse_embed_response(
        embed_response(matrix, model="m", normalized=True, prompt_tokens=0, request_id="", total_us=0, inference_us=0),
        5,
        who="t",
    ).prompt_tokens == 0
    with pytest.raises(Exception, match="4 inputs"):
        parse_embed_response(wire, 4, who="t")


def test_request_round_trip_keeps_optional_fields_optional():
    call = parse_embed_request(pb.EmbedRequest.FromString(embed_request("m", ["a", "b"]).SerializeToString()))
    assert (call.model, call.texts, call.normalize, call.dimensions) == ("m", ["a", "b"], None, None)
    request = embed_request(
        "m", ["a"], normalize=False, dimensions=64, request_id="id", selection=selection_map({"tenant": "t", "n": 2})
    )
    call = parse_embed_request(pb.EmbedRequest.FromString(request.SerializeToString()))
    assert (call.normalize, call.dimensions, call.request_id) == (False, 64, "id")
    assert call.selection == {"tenant": "t", "n": "2"}
    with pytest.raises(InvalidInputError, match="dimensions must be positive"):
        parse_embed_request(embed_request("m", ["a"], dimensions=0))


def test_info_round_trip():
    infos = [GeneratorInfo("a", ("x",), "hf", "mini", 384, True), GeneratorInfo("b", (), "slow", None, None, False)]
    response = info_response(infos, max_inputs=8, max_message_bytes=1024, max_concurrency=2, server_version="v")
    info = info_from_response(pb.InfoResponse.FromString(response.SerializeToString()))
    assert info.names == ["a", "b"] and info.find("x").dims == 384 and info.find("b").dims is None
    assert (info.max_inputs_per_request, info.max_message_bytes, info.max_concurrency) == (8, 1024, 2)


class _Rpc(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, BackendTimeoutError),
        (grpc.StatusCode.UNAVAILABLE, BackendUnavailableError),
        (grpc.StatusCode.INVALID_ARGUMENT, BadRequestError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RateLimitError),
        (grpc.StatusCode.UNAUTHENTICATED, AuthenticationError),
        (grpc.StatusCode.NOT_FOUND, RemoteNotFoundError),
    ],
)
def test_status_codes_become_sdk_errors_naming_target_and_deadline(code, error):
    exc = error_from_rpc(_Rpc(code, "why"), who="aios generator 'g'", target="dns:///e:9000", timeout_s=2.5)
    assert type(exc) is error
    assert str(exc).startswith(f"aios generator 'g': gRPC target 'dns:///e:9000' (deadline 2.5s): {code.name}")
    assert str(exc).endswith(": why")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidInputError("secret-detail"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnknownGeneratorError("secret-detail"), grpc.StatusCode.INTERNAL),  # the backend's, not the caller's
        (RateLimitError("secret-detail"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (BackendTimeoutError("secret-detail"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (BackendUnavailableError("secret-detail"), grpc.StatusCode.UNAVAILABLE),
        (AuthenticationError("secret-detail"), grpc.StatusCode.INTERNAL),
        (KeyError("secret-detail"), grpc.StatusCode.INTERNAL),
    ],
)
def test_server_errors_become_statuses(exc, code):
    got, message = status_for_error(exc, model="m", request_id="r-42")
    assert got == code
    assert "secret-detail" not in message and "r-42" in message  # a backend's text never reaches the caller
