"""``llm_parameters`` of ``hf:`` items: what a spec may ask of a local model, validated once.

>>> HuggingFaceParams(device="cpu", batch_size=64, backend="auto").backend
'auto'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from ..specs import GeneratorParams
from .local_models import _DEVICE_RE, DEVICES

__all__ = ["MAX_CHARS_PER_TOKEN", "HuggingFaceParams"]

#: The most characters a token is taken to span when cutting huge texts: a text keeps this many
#: characters per token of the model's max sequence length. Natural text runs 3-6 characters per
#: token (batching.AVERAGE_CHARS_PER_TOKEN is that estimate), so the model sees exactly the tokens
#: it would have seen uncut; only a pathological text (runs of whitespace, 100-character words)
#: can differ.
MAX_CHARS_PER_TOKEN = 32


class HuggingFaceParams(GeneratorParams):
    """``llm_parameters`` of ``hf:`` items."""

    device: str = Field(default="cpu", description=f"Where the model runs: {DEVICES}.")
    max_seq_length: PositiveInt | None = Field(
        default=None, description="Truncate inputs to this many tokens (default: the model's own limit)."
    )
    prompt: str | None = Field(default=None, description='Text prepended to every input, e.g. "query: ".')
    prompt_name: str | None = Field(default=None, description="Name of a prompt from the model's configuration.")
    query_prompt: str | None = Field(
        default=None, description='Prefix of texts embedded with input_type="query", e.g. "query: " (e5).'
    )
    document_prompt: str | None = Field(
        default=None, description='Prefix of texts embedded with input_type="document", e.g. "passage: " (e5).'
    )
    query_prompt_name: str | None = Field(
        default=None, description="Name of the model's own prompt for queries (default: its 'query' prompt, if any)."
    )
    document_prompt_name: str | None = Field(
        default=None,
        description="Name of the model's own prompt for documents (default: its 'document' prompt, if any).",
    )
    trust_remote_code: bool = Field(default=False, description="Allow model repositories to run their own code.")
    revision: str | None = Field(default=None, description="Model revision (branch, tag or commit).")
    allow_download: bool = Field(
        default=False, description="Fetch the model from the Hugging Face Hub when it is not found locally."
    )
    backend: Literal["torch", "onnx", "onnx-int8", "auto"] = Field(
        default="torch",
        description="Inference engine: torch, onnx (ONNX Runtime, fp32: torch's vectors, faster on CPU), onnx-int8 "
        "(ONNX Runtime with dynamic int8 quantization, fastest on CPU, its own space) or auto (onnx on the CPU "
        "where the 'onnx' extra is installed and precision is fp32, else torch); the onnx ones run on the CPU.",
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        default="fp32",
        description="Numbers the torch model computes in: fp32, bf16 (weights and activations in bfloat16; about "
        "2.5-3x faster where the CPU has AMX, several times slower where it has no native bf16) or auto (bf16 "
        "where the CPU has AMX or AVX-512-BF16, else fp32). bf16 vectors are their own embedding space.",
    )
    streams: PositiveInt | Literal["auto"] = Field(
        default="auto",
        description="Forward passes ONNX Runtime runs at once, each on its share of the cores (auto: 2 where the "
        "process may use 2 or more cores, else 1). Side by side, small passes keep every core busy: more "
        "requests per second under concurrent load, and large calls split across them; 1 gives a lone request "
        "all the cores. torch runs one pass at a time.",
    )
    onnx_cache_dir: str | None = Field(
        default=None,
        description="Where ONNX exports are cached (default: $AGENT_EMBEDDINGS_CACHE_DIR/onnx, "
        "else ~/.cache/agent-embeddings/onnx).",
    )
    max_input_chars: PositiveInt | None = Field(
        default=None,
        description=f"Cut longer texts to this many characters before tokenizing (default: "
        f"{MAX_CHARS_PER_TOKEN} per token of the model's max sequence length). The model reads no further than its "
        "max sequence length anyway; the cut keeps one huge text from holding the tokenizer for seconds.",
    )

    @model_validator(mode="after")
    def _one_prompt_each(self) -> HuggingFaceParams:
        for kind in ("", "query_", "document_"):
            if getattr(self, f"{kind}prompt") is not None and getattr(self, f"{kind}prompt_name") is not None:
                raise ValueError(f"give {kind}prompt or {kind}prompt_name, not both")
        return self

    @model_validator(mode="after")
    def _precision_is_torch(self) -> HuggingFaceParams:
        if self.precision == "bf16" and self.backend not in ("torch", "auto"):
            raise ValueError(f"precision 'bf16' needs backend 'torch' (backend {self.backend!r} sets its own)")
        return self

    @model_validator(mode="after")
    def _streams_are_onnx(self) -> HuggingFaceParams:
        if self.backend == "torch" and self.streams not in ("auto", 1):
            raise ValueError(
                f"streams {self.streams} needs an onnx backend (backend 'torch' runs one pass at a time: its threads "
                "are one pool per process)"
            )
        return self

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"unknown device {value!r}; expected one of {DEVICES}")
        return value
