"""Argument checking and conversion shared by :class:`~llamacpp_integrations.Llama`'s methods."""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _core
from ._sampling import SAMPLING_ARGS
from .errors import InvalidParameterError

logger = logging.getLogger("llamacpp_integrations")


def sampling_values(args: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling settings among a method's arguments (its ``locals()`` or :func:`bind_call`'s
    result): those bound by name, and those in its ``**sampling``."""
    out = {name: args[name] for name in SAMPLING_ARGS if name in args}
    out.update(args.get("sampling") or {})
    return out


def bind_call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The arguments a call of ``method`` would get, defaults filled in; TypeError for an
    unknown keyword, as the call itself would raise."""
    bound = inspect.signature(method).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def max_tokens_limit(max_tokens: int | None) -> int:
    """The engine's limit: -1 (until the context is full) for None or <= 0."""
    return -1 if max_tokens is None or max_tokens <= 0 else int(max_tokens)


_models: weakref.WeakValueDictionary[tuple[Any, ...], _core.Model] = weakref.WeakValueDictionary()
_models_lock = threading.Lock()


def file_identity(path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """What tells a model file apart: its real path, size and modification time (the path
    alone when it cannot be read: the loader then reports the cause)."""
    path = os.fspath(path)
    try:
        stat = os.stat(path)
    except OSError:
        return (path,)
    return (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


def load_model(
    model_path: str | os.PathLike[str],
    *,
    n_gpu_layers: int = 0,
    main_gpu: int = 0,
    tensor_split: Sequence[float] | None = None,
    use_mmap: bool = True,
    use_mlock: bool = False,
    vocab_only: bool = False,
    lora_path: str | os.PathLike[str] | None = None,
    lora_scale: float = 1.0,
    progress_callback: Callable[[float], bool | None] | None = None,
) -> _core.Model:
    """The loaded weights of a GGUF file, loaded once however many ``Llama`` use them with
    these settings (a load with a progress callback is its own)."""
    lora = [(os.fspath(lora_path), float(lora_scale))] if lora_path else []
    split = [float(x) for x in tensor_split] if tensor_split else []

    def load() -> _core.Model:
        return _core.Model.load(
            os.fspath(model_path),
            n_gpu_layers=n_gpu_layers,
            main_gpu=main_gpu,
            tensor_split=split,
            use_mmap=use_mmap,
            use_mlock=use_mlock,
            vocab_only=vocab_only,
            lora=lora,
            progress=progress_callback,
        )

    if progress_callback is not None:
        return load()
    key = (*file_identity(model_path), n_gpu_layers, main_gpu, tuple(split), use_mmap, use_mlock,
           vocab_only, tuple(lora))  # fmt: skip
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


SPECULATIVE_TYPES = ("none", "ngram", "ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod",
                     "ngram-cache", "draft")  # fmt: skip


def speculative_type(speculative: str | None, draft_model_path: object) -> str:
    """The engine's speculative setting: None is "none", or "draft" when there is a draft model."""
    if speculative is None:
        return "none" if draft_model_path is None else "draft"
    if not isinstance(speculative, str) or speculative not in SPECULATIVE_TYPES:
        known = ", ".join(repr(t) for t in SPECULATIVE_TYPES)
        raise InvalidParameterError(
            f"speculative must be None or one of {known}, got {speculative!r}"
        )
    if draft_model_path is not None and speculative != "draft":
        raise InvalidParameterError(
            f"draft_model_path drafts with speculative='draft', not {speculative!r}"
        )
    if draft_model_path is None and speculative == "draft":
        raise InvalidParameterError("speculative='draft' needs draft_model_path")
    return speculative
