"""Argument checking and conversion shared by :class:`~llamacpp_integrations.Llama`'s methods."""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _core
from .errors import InvalidParameterError

logger = logging.getLogger("llamacpp_integrations")

SAMPLING_ARGS = (
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "top_k",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "mirostat_mode",
    "mirostat_tau",
    "mirostat_eta",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "seed",
    "logit_bias",
)
"""The sampling keywords that create_completion and create_chat_completion share."""


def sampling_kwargs(call_args: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling keywords out of a method's arguments (its ``locals()``)."""
    return {name: call_args[name] for name in SAMPLING_ARGS}


def bind_call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The arguments a call of ``method`` would get, defaults filled in; TypeError for an
    unknown keyword, as the call itself would raise."""
    bound = inspect.signature(method).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def max_tokens_limit(max_tokens: int | None) -> int:
    """The engine's limit: -1 (until the context is full) for None or <= 0."""
    return -1 if max_tokens is None or max_tokens <= 0 else int(max_tokens)


ModelKey = tuple[Any, ...]
_models: weakref.WeakValueDictionary[ModelKey, _core.Model] = weakref.WeakValueDictionary()
_models_lock = threading.Lock()


def load_shared_model(key: ModelKey, load: Callable[[], _core.Model]) -> _core.Model:
    """Returns the loaded model for ``key``, loading it once however many ``Llama`` share it."""
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = load()
            _models[key] = model
        return model


def kv_type(value: int | str | None, name: str) -> int:
    if value is None:
        return -1
    if isinstance(value, bool):
        raise InvalidParameterError(
            f"{name} must be a ggml type name such as 'f16' or 'q8_0', or its id"
        )
    if isinstance(value, int):
        return value
    type_id = _core.ggml_type_from_name(str(value).lower())
    if type_id < 0:
        raise InvalidParameterError(
            f"{name}={value!r} is not a ggml type (try 'f16', 'q8_0' or 'q4_0')"
        )
    return type_id


def check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidParameterError(f"{name} must be >= {minimum}, got {value}")
    return value


def stop_list(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    out = []
    for s in stop:
        if not isinstance(s, str):
            raise InvalidParameterError(f"stop strings must be str, got {s!r}")
        if s:
            out.append(s)
    return out


def enable_verbose_logging() -> None:
    _core.set_log_level(2)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
