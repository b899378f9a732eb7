"""What ``ChatLlamaCpp``, ``LlamaCpp`` and ``LlamaCppEmbeddings`` share: the constructor fields
of langchain_community's classes, the ``Llama`` they build from them, and per-call settings."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.language_models.base import LangSmithParams
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from typing_extensions import Self

from .._loading import LoadSetting, check_load, load_settings
from .._sampling import SAMPLING_ARGS, settings
from .._shared import shared_llama
from ..download import download_model
from ..errors import InvalidParameterError
from ..hub import from_hub
from ..llama import Llama

__all__ = ["LlamaCppFields", "LlamaLoadFields", "SamplingFields", "deadline_of"]

PROVIDER = "llamacpp"
"""``ls_provider`` in traces, and ``model_provider`` in response metadata."""

# The Llama load settings that are fields here (langchain_community's, and ``mmproj_path``), with
# the type, default and doc they have where langchain_community's differ from ``LoadOptions``;
# None, where a field allows it, means the Llama's default. Every other load setting goes
# through ``model_kwargs``, checked against the same definition.
_LOAD_FIELDS: dict[str, tuple[Any, Any, str] | None] = {
    "mmproj_path": (
        str | None,
        None,
        "A vision projector GGUF for the model: ``HumanMessage`` content may then hold images "
        "(``image_url`` parts, or LangChain's standard image blocks, base64 or URL).",
    ),
    "lora_base": None,
    "lora_path": None,
    "n_ctx": None,
    "seed": (int, -1, "Sampling seed; -1 picks a random one per call."),
    "f16_kv": None,
    "vocab_only": None,
    "use_mlock": None,
    "use_mmap": None,
    "n_threads": None,
    "n_batch": (
        int,
        512,
        "Tokens per decode call while reading the prompt (langchain_community's default of 8 "
        "is 60 times slower here; 512 is llama.cpp's).",
    ),
    "n_gpu_layers": (
        int | None,
        None,
        "Layers to offload to the GPU (-1: all); needs a CUDA or Metal build.",
    ),
    "n_seq_max": (
        int,
        8,
        "Requests served at once (``batch``/``abatch``, threads, coroutines), each in its own "
        "slot with its own prompt cache and ``n_ctx`` KV cells; more wait in line.",
    ),
    "last_n_tokens_size": None,
    "rope_freq_scale": (float | None, None, "RoPE frequency scale; None takes the model's."),
    "rope_freq_base": (float | None, None, "RoPE base frequency; None takes the model's."),
    "verbose": (
        bool,
        False,
        "Show llama.cpp's log (through the ``llamacpp_integrations`` logger).",
    ),
}


def _pydantic_type(s: LoadSetting) -> Any:
    """The type of a load setting as a pydantic field (paths as ``str``)."""
    if s.kind == "path":
        return str | None if s.optional else str
    return s.type


def _load_fields() -> dict[str, Any]:
    """Pydantic fields of the load settings in ``_LOAD_FIELDS``, from ``LoadOptions``."""
    by_name = {s.name: s for s in load_settings()}
    out: dict[str, Any] = {}
    for name, override in _LOAD_FIELDS.items():
        s = by_name[name]
        kind, default, doc = override or (_pydantic_type(s), s.default, s.doc)
        r = s.range
        out[name] = (kind, Field(default=default, description=doc, ge=r.ge, gt=r.gt, le=r.le))
    return out


if TYPE_CHECKING:
    _LoadSettingFields = BaseModel
else:
    _LoadSettingFields = create_model(
        "_LoadSettingFields",
        __config__=ConfigDict(extra="forbid", protected_namespaces=()),
        **_load_fields(),
    )


class LlamaLoadFields(_LoadSettingFields):
    """Fields that choose and load the model (the ``client``): the Llama load settings
    langchain_community's classes have as fields (``n_ctx``, ``n_threads``, ``n_batch``,
    ``n_gpu_layers``, ``seed``, ``use_mmap``, ...; see ``llamacpp_integrations.LoadOptions``),
    ``model_kwargs`` for the others, and these."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    client: Llama | None = Field(default=None, exclude=True)
    """A ``Llama`` to use instead of loading one."""
    model_path: str | None = None
    """Path to the GGUF file (not needed with ``client`` or ``model_url``)."""
    model_url: str | None = None
    """URL of a GGUF file, downloaded once into the cache (resumed if interrupted)."""
    model_sha256: str | None = None
    """Expected SHA-256 (hex) of the file at ``model_url``."""
    share_client: bool = True
    """Use the process's one ``Llama`` for this GGUF and these settings, shared with every
    other adapter that names them (one copy of the weights, one context and one scheduler for
    chat, completion and embedding requests alike); False loads a separate one."""
    n_parts: int = -1
    """Accepted for compatibility: GGUF models are never split into parts."""
    logits_all: bool = False
    """Accepted for compatibility: logits are kept for every token exactly when logprobs are
    asked for."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further ``Llama`` constructor arguments (``flash_attn``, ``type_k``, ``chat_format``...;
    any key of ``LoadOptions``), checked when the model is created: an unknown key raises
    ``TypeError`` naming it."""

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str, **kwargs: Any) -> Self:
        """Loads a GGUF file from the Hugging Face Hub (see ``hub.from_hub``)."""
        return from_hub(cls, repo_id, filename, kwargs)

    @model_validator(mode="after")
    def _load_client(self) -> LlamaLoadFields:
        check_load(self.model_kwargs, "model_kwargs")  # a typo fails even with a client
        if self.client is None:
            if not self.model_path and self.model_url:
                self.model_path = str(download_model(self.model_url, sha256=self.model_sha256))
            if not self.model_path:
                raise ValueError("pass model_path (a GGUF file), model_url or client (a Llama)")
            kwargs = self.llama_kwargs()
            self.client = shared_llama(self.share_client, **kwargs)
        return self

    def llama_kwargs(self) -> dict[str, Any]:
        """The ``Llama`` constructor arguments these fields describe."""
        kwargs: dict[str, Any] = {
            name: value for name in _LOAD_FIELDS if (value := getattr(self, name)) is not None
        }
        kwargs["model_path"] = self.model_path
        kwargs["seed"] = 0xFFFFFFFF if kwargs["seed"] < 0 else kwargs["seed"]
        kwargs["n_ubatch"] = kwargs["n_batch"]
        overlap = set(kwargs) & set(self.model_kwargs)
        if overlap:
            raise ValueError(f"model_kwargs repeats fields given directly: {sorted(overlap)}")
        kwargs.update(self.model_kwargs)
        return kwargs

    def load_value(self, name: str) -> Any:
        """The value of a load field (made from ``LoadOptions``, so unknown to type checkers)."""
        return getattr(self, name)

    @property
    def llama(self) -> Llama:
        """The loaded ``Llama``."""
        assert self.client is not None  # set by the validator
        return self.client

    @property
    def resolved_model_name(self) -> str:
        """The model's file name, e.g. ``SmolLM2-135M-Instruct-Q8_0.gguf``."""
        return os.path.basename(self.llama.model_path)


def _native_sampling_fields() -> dict[str, Any]:
    """Pydantic fields of the sampling settings (``SamplingOptions``); ``seed`` is a load
    field here, as in langchain_community."""
    out: dict[str, Any] = {}
    for s in settings():
        if s.name != "seed":
            r = s.range
            field = Field(default=s.default, description=s.doc, ge=r.ge, gt=r.gt, le=r.le)
            out[s.name] = (s.type, field)
    return out


if TYPE_CHECKING:
    _NativeSampling = BaseModel
else:
    _NativeSampling = create_model(
        "_NativeSampling",
        __config__=ConfigDict(extra="forbid", protected_namespaces=()),
        **_native_sampling_fields(),
    )


class SamplingFields(_NativeSampling):
    """Generation settings, overridable per call (``invoke(..., temperature=0)``): the engine's
    sampling settings (``temperature``, ``top_p``, ``top_k``, ``min_p``, ``typical_p``,
    ``repeat_penalty``, ``presence_penalty``, ``frequency_penalty``, ``mirostat_*``, ``dry_*``,
    ``logit_bias``; see ``llamacpp_integrations.SamplingOptions``), and these."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    max_tokens: int | None = 256
    """Tokens to generate at most; None or <= 0: until the context is full."""
    stop: list[str] | None = None
    """Strings that end generation (merged with a call's ``stop``)."""
    grammar_path: str | os.PathLike[str] | None = None
    """A .gbnf file the output must follow."""
    grammar: str | Any | None = None
    """A GBNF grammar (text, or llama-cpp-python's ``LlamaGrammar``)."""
    streaming: bool = False
    """Generate through the streaming path, calling ``on_llm_new_token`` per token."""
    timeout: float | None = None
    """Seconds a call may take; past it the generation is cancelled and ``TimeoutError``
    raised."""
    max_retries: int = 0
    """Accepted for drop-in compatibility with hosted models: a local model has no transient
    network failures to retry."""

    @model_validator(mode="after")
    def _check_grammar(self) -> SamplingFields:
        if self.grammar is not None and self.grammar_path is not None:
            raise ValueError("pass grammar or grammar_path, not both")
        return self

    def sampling_call_kwargs(
        self, stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Keyword arguments for a ``Llama`` call: the fields, then the call's overrides."""
        out: dict[str, Any] = {"max_tokens": self.max_tokens}
        out.update((name, getattr(self, name)) for name in SAMPLING_ARGS if name != "seed")
        if self.grammar is not None:
            out["grammar"] = self.grammar
        if self.grammar_path is not None:
            out["grammar_path"] = os.fspath(self.grammar_path)
        stops = [*(self.stop or []), *(stop or [])]
        if stops:
            out["stop"] = list(dict.fromkeys(stops))
        for key, value in kwargs.items():
            if key in ("grammar", "grammar_path") and value is not None:
                out.pop("grammar", None)
                out.pop("grammar_path", None)
            if key == "stop":
                if value:
                    merged = [*out.get("stop", []), *([value] if isinstance(value, str) else value)]
                    out["stop"] = list(dict.fromkeys(merged))
                continue
            out[key] = value
        return out


class LlamaCppFields(LlamaLoadFields, SamplingFields):
    """What ``ChatLlamaCpp`` and ``LlamaCpp`` share besides their base classes: the load and
    sampling fields, the reported name, the deprecated ``callback_manager`` and trace params."""

    model_name: str | None = None
    """The name reported in responses and traces (default: the GGUF file name)."""
    callback_manager: BaseCallbackManager | None = Field(default=None, exclude=True)
    """Deprecated spelling of ``callbacks``, accepted for compatibility."""

    @model_validator(mode="before")
    @classmethod
    def _callback_manager_alias(cls, values: Any) -> Any:
        if (
            isinstance(values, dict)
            and values.get("callback_manager") is not None
            and values.get("callbacks") is None
        ):
            values = {**values, "callbacks": values["callback_manager"]}
        return values

    def reported_name(self) -> str:
        """``model_name``, else the GGUF file name."""
        return self.model_name or self.resolved_model_name

    def identifying_params(self) -> dict[str, Any]:
        """What identifies this model and its settings (LangChain's ``_identifying_params``)."""
        return {
            "model_path": self.llama.model_path,
            "n_ctx": self.llama.n_ctx(),
            "max_tokens": self.max_tokens,
            **{k: getattr(self, k) for k in ("temperature", "top_p", "top_k", "repeat_penalty")},
        }

    def ls_params(
        self, model_type: str, stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> LangSmithParams:
        """LangSmith's standard trace params; a per-call ``model=`` is the reported name."""
        call = self.sampling_call_kwargs(stop, kwargs)  # the fields under the call's values
        params: LangSmithParams = {
            "ls_provider": PROVIDER,
            "ls_model_name": kwargs.get("model") or self.reported_name(),
            "ls_model_type": model_type,  # type: ignore[typeddict-item]
            "ls_temperature": call["temperature"],
        }
        if call.get("max_tokens"):
            params["ls_max_tokens"] = call["max_tokens"]
        if call.get("stop"):
            params["ls_stop"] = list(call["stop"])
        return params


def deadline_of(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` deadline of a call with this timeout (None: no limit)."""
    if timeout is None:
        return None
    if timeout <= 0:
        raise InvalidParameterError("timeout must be > 0 seconds")
    return time.monotonic() + timeout
