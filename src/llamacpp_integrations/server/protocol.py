"""Request and response bodies of the OpenAI-compatible server, as pydantic models.

The OpenAPI documentation at ``/docs`` comes from these models. Requests are parsed into the
same keyword arguments that :class:`~llamacpp_integrations.Llama` takes, so the server adds no
second implementation of chat, tools or sampling. An unknown field is an error (400 naming it):
a typo such as ``max_token`` is never silently ignored. OpenAI's informational fields (``user``,
``store``, ``metadata``, ``service_tier``) are accepted and have no effect on a local model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from .._sampling import settings

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "DetokenizeRequest",
    "EmbeddingRequest",
    "ErrorBody",
    "ModelCard",
    "ModelList",
    "TokenizeRequest",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(Strict):
    include_usage: bool = False
    """Send a last chunk with the usage of the whole request (and no choices)."""


def _engine_sampling_fields() -> dict[str, Any]:
    """The engine's sampling settings as optional fields (None: ``Llama``'s default); the
    server maps ``seed`` (per choice) and ``logit_bias`` (string token ids) itself."""
    out: dict[str, Any] = {}
    for s in settings():
        if s.name not in ("seed", "logit_bias"):
            r = s.range
            field = Field(default=None, description=s.doc, ge=r.ge, gt=r.gt, le=r.le)
            out[s.name] = (s.type | None, field)
    return out


if TYPE_CHECKING:
    _EngineSampling = Strict
else:
    _EngineSampling = create_model("_EngineSampling", __base__=Strict, **_engine_sampling_fields())


class SamplingFields(_EngineSampling):
    """Sampling fields shared by chat and text completions: the engine's sampling settings
    (``temperature``, ``top_p``, ``top_k``, ``min_p``, ...; None leaves ``Llama``'s default)
    and these."""

    model: str | None = None
    """The served model's alias (``GET /v1/models``); may be omitted when one model is served."""
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    logit_bias: dict[str, float] | None = None
    grammar: str | None = None
    """A GBNF grammar for the output (llama.cpp extension)."""
    ignore_eos: bool = False
    n: int = Field(default=1, ge=1, le=16)
    """Choices to generate; each is its own request, decoded in parallel slots."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    reasoning_format: Literal["auto", "none", "deepseek"] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    """Text after the gap (fill-in-the-middle, for editor completion)."""
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    best_of: int | None = Field(default=None, ge=1, le=1)


class EmbeddingRequest(Strict):
    """``POST /v1/embeddings``."""

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class TokenizeRequest(Strict):
    """``POST /tokenize`` (llama-server's shape)."""

    model: str | None = None
    content: str
    add_special: bool = False


class DetokenizeRequest(Strict):
    """``POST /detokenize`` (llama-server's shape)."""

    model: str | None = None
    tokens: list[int]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llamacpp-integrations"
    meta: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail
