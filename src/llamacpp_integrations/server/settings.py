"""Server settings: one pydantic-settings class, read from flags, ``LLAMACPP_SERVER_*``
environment variables and a YAML or JSON config file (flags win over the environment, the
environment over the file)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ModelConfig", "ServerSettings", "parse_settings"]


class ModelConfig(BaseModel):
    """One served model (an entry of the config file's ``models`` list)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    """The GGUF file; None: the default model."""
    alias: str | None = None
    """The name requests use in ``model``; default: the file name without ``.gguf``."""
    n_ctx: int | None = Field(default=None, ge=0)
    n_seq_max: int | None = Field(default=None, ge=1)
    kv_unified: bool | None = None
    n_threads: int | None = Field(default=None, ge=1)
    n_gpu_layers: int | None = None
    flash_attn: bool | None = None
    chat_format: str | None = None
    chat_template: str | None = None
    embedding: bool = False
    """Load as an embedding model (its context outputs embeddings)."""
    n_batch: int | None = Field(default=None, ge=1)
    speculative: str | None = None
    """Speculative decoding: an n-gram kind ("ngram", ...) or "draft"; default: the server's."""
    draft_model_path: str | None = None
    """A draft GGUF sharing the model's vocabulary (speculative "draft")."""
    draft_max: int | None = Field(default=None, ge=1)
    mmproj_path: str | None = None
    """A vision projector GGUF for the model: chat messages may then hold images."""


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


class ServerSettings(BaseSettings):
    """Everything the server needs; each field is also ``--flag-name`` and
    ``LLAMACPP_SERVER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="LLAMACPP_SERVER_", extra="forbid")

    model: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """GGUF files to serve (repeatable); none: the default model."""
    model_alias: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Aliases of the --model files, in order."""
    mmproj: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Vision projector GGUFs of the --model files, in order (images in chat messages)."""
    allow_image_urls: bool = False
    """Fetch http(s) image URLs in chat messages (off: images come as data: URLs). Local
    files are never read for a client."""
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
    n_ctx: int = Field(default=4096, ge=0)
    """Context window of each slot (each request), in tokens; 0: the model's training context."""
    n_seq_max: int = Field(default=4, ge=1)
    """Slots: requests generated at once, each with n_ctx KV cells of its own."""
    kv_unified: bool = False
    """One pool of n_ctx KV cells shared by the slots instead of n_ctx per slot."""
    n_threads: int | None = Field(default=None, ge=1)
    n_gpu_layers: int = 0
    flash_attn: bool | None = None
    speculative: str | None = None
    """Speculative decoding for every model: "ngram" (drafts from n-grams of each request's own
    prompt and output), another of llama.cpp's n-gram kinds, or none."""
    draft_max: int = Field(default=16, ge=1)
    """The longest draft, in tokens."""
    draft_always: bool = False
    """Verify every draft (as llama-server does) instead of only those worth their cost."""
    verbose: bool = False
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
            out.append(ModelConfig(path=path, alias=alias, mmproj_path=mmproj))
        if not out:
            alias = self.model_alias[0] if self.model_alias else None
            mmproj = self.mmproj[0] if self.mmproj else None
            out.append(ModelConfig(path=None, alias=alias, mmproj_path=mmproj))
        return out

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


def build_parser(prog: str = "llamacpp-integrations serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="An OpenAI-compatible server on the native llama.cpp engine."
    )
    for name, field in ServerSettings.model_fields.items():
        if name == "models":
            continue
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "") + f" (env LLAMACPP_SERVER_{name.upper()})"
        if field.annotation is bool or name == "verbose":
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif name in REPEATABLE:
            parser.add_argument(flag, action="append", default=None, help=help_text)
        elif name == "flash_attn":
            parser.add_argument(flag, choices=["on", "off"], default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, help=help_text)
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> ServerSettings:
    """Flags over environment over config file over defaults."""
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if v is not None}
    if "flash_attn" in flags:
        flags["flash_attn"] = flags["flash_attn"] == "on"
    config_path = flags.get("config") or os.environ.get("LLAMACPP_SERVER_CONFIG")
    file_values = _read_config(config_path) if config_path else {}
    env_only = ServerSettings()  # the environment (and defaults)
    env_set = env_only.model_fields_set
    merged: dict[str, Any] = dict(file_values)
    merged.update({k: getattr(env_only, k) for k in env_set})
    merged.update(flags)
    return ServerSettings.model_validate(merged)
