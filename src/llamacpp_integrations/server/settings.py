"""Server settings: one pydantic-settings class, read from flags, ``LLAMACPP_SERVER_*``
environment variables and a YAML or JSON config file (flags win over the environment, the
environment over the file)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .._loading import LoadSetting, load_settings

__all__ = ["ModelConfig", "ServerSettings", "parse_settings"]


NOT_SERVED = ("progress_callback", "allow_image_files", "verbose")
"""Load settings no model of the server takes from its settings: a callback; local image files
(a client must never name a server file); and ``verbose``, a server setting of its own."""

PER_MODEL = ("vocab_only", "tensor_split", "lora_path", "lora_base", "embedding",
             "draft_model_path", "mmproj_path", "chat_format", "chat_template")  # fmt: skip
"""Load settings only the config file's ``models`` entries take (the others are also
server-wide settings, ``--flags`` and ``LLAMACPP_SERVER_*`` variables, that entries override)."""

SERVER_DEFAULTS: dict[str, tuple[Any, str]] = {
    "n_ctx": (
        4096,
        "Context window of each slot (each request), in tokens; 0: the model's training context.",
    ),
    "n_seq_max": (4, "Slots: requests generated at once, each with n_ctx KV cells of its own."),
    "kv_unified": (
        False,
        "One pool of n_ctx KV cells shared by the slots instead of n_ctx per slot.",
    ),
    "speculative": (
        None,
        'Speculative decoding for every model: "ngram" (drafts from n-grams of each request\'s '
        "own prompt and output), another of llama.cpp's n-gram kinds, or none.",
    ),
    "draft_always": (
        False,
        "Verify every draft (as llama-server does) instead of only those worth their cost.",
    ),
    "allow_image_urls": (
        False,
        "Fetch http(s) image URLs in chat messages (off: images come as data: URLs). Local "
        "files are never read for a client.",
    ),
}
"""The server's defaults and docs where they differ from ``Llama``'s."""


def _served() -> list[LoadSetting]:
    return [s for s in load_settings() if s.name not in NOT_SERVED]


def _field_type(s: LoadSetting) -> Any:
    """A load setting's type in a config file, a flag or an environment variable."""
    if s.kind == "path":
        return str | None if s.optional else str
    if s.kind == "floats":
        return list[float] | None
    return s.type


def _checked(s: LoadSetting) -> AfterValidator:
    """Checks a value (once pydantic has converted it) against its ``LoadOptions`` definition."""
    return AfterValidator(lambda value: value if value is None else s.check(value))


def _model_fields() -> dict[str, Any]:
    """A config entry's load settings: each None unless given (None: the server's setting,
    else the ``Llama`` default)."""
    return {
        s.name: (Annotated[_field_type(s) | None, _checked(s)], Field(None, description=s.doc))
        for s in _served()
    }


def _server_fields() -> dict[str, Any]:
    """The server-wide load settings, with the ``Llama`` defaults unless the server has its own."""
    out: dict[str, Any] = {}
    for s in _served():
        if s.name not in PER_MODEL:
            default, doc = SERVER_DEFAULTS.get(s.name, (s.default, s.doc))
            kind: Any = Annotated[_field_type(s), _checked(s)]
            out[s.name] = (kind, Field(default, description=doc))
    return out


if TYPE_CHECKING:
    _ModelLoadFields = BaseModel
    _ServerLoadFields = BaseSettings
else:
    _ModelLoadFields = create_model(
        "_ModelLoadFields", __config__=ConfigDict(extra="forbid"), **_model_fields()
    )
    _ServerLoadFields = create_model("_ServerLoadFields", __base__=BaseSettings, **_server_fields())


class ModelConfig(_ModelLoadFields):
    """One served model (an entry of the config file's ``models`` list): its file, its alias,
    and any ``Llama`` load setting (``LoadOptions``: ``n_ctx``, ``n_seq_max``, ``type_k``,
    ``chat_format``, ``mmproj_path``, ...) over the server's."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    """The GGUF file; None: the default model."""
    alias: str | None = None
    """The name requests use in ``model``; default: the file name without ``.gguf``."""

    def given(self) -> dict[str, Any]:
        """The load settings this entry gives (not None)."""
        return {s.name: value for s in _served() if (value := getattr(self, s.name)) is not None}


REPEATABLE = ("model", "model_alias", "mmproj", "api_key", "cors_origin")
"""Settings given as repeated flags (or JSON / comma-separated lists in the environment)."""


def _split(value: Any) -> Any:
    """A list from a repeated flag, a JSON list, or a comma-separated environment value."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class ServerSettings(_ServerLoadFields):
    """Everything the server needs; each field is also ``--flag-name`` and
    ``LLAMACPP_SERVER_<NAME>``. The ``Llama`` load settings (``LoadOptions``, less
    ``PER_MODEL`` and ``NOT_SERVED``) are fields too: the default of every served model."""

    model_config = SettingsConfigDict(env_prefix="LLAMACPP_SERVER_", extra="forbid")

    model: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """GGUF files to serve (repeatable); none: the default model."""
    model_alias: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Aliases of the --model files, in order."""
    mmproj: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Vision projector GGUFs of the --model files, in order (images in chat messages)."""
    config: str | None = None
    """A YAML or JSON file: {"models": [{"path", "alias", "n_ctx", ...}], and any setting}."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Keys clients must send as ``Authorization: Bearer <key>`` (repeatable)."""
    api_key_file: str | None = None
    """A file with one key per line."""
    cors_origin: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed by CORS (repeatable); none: CORS off."""
    max_queue: int = Field(default=64, ge=0)
    """Requests per model that may wait beyond its slots; more get 503 with Retry-After."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    request_timeout: float | None = Field(default=None, gt=0)
    """Seconds a generation may take before it is cancelled (504)."""
    verbose: bool = Field(default=False, description="Log requests and llama.cpp's output.")
    """Log requests (uvicorn at info) and llama.cpp's output."""
    models: list[ModelConfig] = Field(default_factory=list)
    """From the config file only."""

    @field_validator(*REPEATABLE, mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    def model_configs(self) -> list[ModelConfig]:
        """The models to serve: the config file's, then the --model flags', else the default."""
        out = list(self.models)
        for i, path in enumerate(self.model):
            alias = self.model_alias[i] if i < len(self.model_alias) else None
            mmproj = self.mmproj[i] if i < len(self.mmproj) else None
            out.append(
                ModelConfig.model_validate({"path": path, "alias": alias, "mmproj_path": mmproj})
            )
        if not out:
            alias = self.model_alias[0] if self.model_alias else None
            mmproj = self.mmproj[0] if self.mmproj else None
            out.append(
                ModelConfig.model_validate({"path": None, "alias": alias, "mmproj_path": mmproj})
            )
        return out

    def llama_kwargs(self, cfg: ModelConfig) -> dict[str, Any]:
        """The ``Llama`` load settings of a served model: its entry's over the server's."""
        given = cfg.given()
        out = {s.name: getattr(self, s.name) for s in _served() if s.name not in PER_MODEL}
        out.update(given)
        if "n_ubatch" not in given and "n_ubatch" not in self.model_fields_set:
            out["n_ubatch"] = out["n_batch"]  # an n_batch alone sets both, as it always did
        out["allow_image_files"] = False  # a client must not read the server's files
        out["verbose"] = self.verbose
        return {k: v for k, v in out.items() if v is not None}

    def keys(self) -> list[str]:
        keys = list(self.api_key)
        if self.api_key_file:
            text = Path(self.api_key_file).read_text(encoding="utf-8")
            keys += [line.strip() for line in text.splitlines() if line.strip()]
        return keys


def _read_config(path: str) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        import yaml  # type: ignore[import-untyped]

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, list):
        data = {"models": data}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'models' or a list of models")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _on_off(annotation: Any) -> bool:
    """A setting that is True, False or None (auto): ``--flag on|off``."""
    return bool(annotation == bool | None)


def build_parser(prog: str = "llamacpp-integrations serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="An OpenAI-compatible server on the native llama.cpp engine."
    )
    for name, field in ServerSettings.model_fields.items():
        if name == "models":
            continue
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "") + f" (env LLAMACPP_SERVER_{name.upper()})"
        if field.annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif name in REPEATABLE:
            parser.add_argument(flag, action="append", default=None, help=help_text)
        elif _on_off(field.annotation):
            parser.add_argument(flag, choices=["on", "off"], default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, help=help_text)
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> ServerSettings:
    """Flags over environment over config file over defaults."""
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if v is not None}
    for name, field in ServerSettings.model_fields.items():
        if name in flags and _on_off(field.annotation):
            flags[name] = flags[name] == "on"
    config_path = flags.get("config") or os.environ.get("LLAMACPP_SERVER_CONFIG")
    file_values = _read_config(config_path) if config_path else {}
    env_only = ServerSettings()  # the environment (and defaults)
    env_set = env_only.model_fields_set
    merged: dict[str, Any] = dict(file_values)
    merged.update({k: getattr(env_only, k) for k in env_set})
    merged.update(flags)
    return ServerSettings.model_validate(merged)
