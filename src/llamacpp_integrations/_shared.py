"""One :class:`~llamacpp_integrations.Llama` per model file and settings in a process.

Adapter instances (LangChain's chat model, LLM and embeddings, LlamaIndex's LLM and embedding)
that name the same GGUF with the same constructor arguments get the same ``Llama``: one copy of
the weights, one context, one worker thread and thread pool, and one scheduler through which
their generation and embedding requests all go. The registry holds the models weakly; each
adapter holds a reference and gives it back with :func:`release` when it is closed.
"""

from __future__ import annotations

import inspect
import os
import threading
import weakref
from collections.abc import Hashable, Mapping
from typing import Any

from ._params import file_identity
from .llama import Llama

__all__ = ["release", "share_key", "shared_llama"]

_lock = threading.Lock()
_llamas: weakref.WeakValueDictionary[Hashable, Llama] = weakref.WeakValueDictionary()
_users: weakref.WeakKeyDictionary[Llama, int] = weakref.WeakKeyDictionary()


def _hashable(value: Any) -> Hashable | None:
    """A hashable stand-in for an argument value; None when it cannot be compared (a callback)."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if isinstance(value, os.PathLike):
        path: str | bytes = os.fspath(value)
        return path
    if isinstance(value, Mapping):
        value = sorted(value.items())
    if isinstance(value, (list, tuple)):
        parts = [_hashable(v) for v in value]
        unhashable = any(p is None and v is not None for p, v in zip(parts, value, strict=True))
        return None if unhashable else tuple(parts)
    return None


def share_key(kwargs: Mapping[str, Any]) -> Hashable | None:
    """What makes two ``Llama(**kwargs)`` the same engine: the file (path, size, modification
    time) and every constructor argument, defaults filled in. None when they cannot be
    compared (a progress callback)."""
    bound = inspect.signature(Llama.__init__).bind(None, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop("self", None)
    identity = file_identity(args.pop("model_path"))
    if len(identity) == 1:
        return None  # unreadable: Llama() reports the cause
    parts = []
    for name, value in sorted(args.items()):
        key = _hashable(value)
        if key is None and value is not None:
            return None
        parts.append((name, key))
    return (identity, tuple(parts))


def shared_llama(share: bool = True, **kwargs: Any) -> Llama:
    """The process's ``Llama`` for these arguments, created on first use; each call takes a
    reference that :func:`release` gives back. ``share=False``: a ``Llama`` of its own."""
    if not share:
        return Llama(**kwargs)
    key = share_key(kwargs)
    with _lock:
        llm = _llamas.get(key) if key is not None else None
        if llm is None or llm._closed:
            llm = Llama(**kwargs)
            if key is not None:
                _llamas[key] = llm
        _users[llm] = _users.get(llm, 0) + 1
        return llm


def release(llm: Llama) -> None:
    """Gives back a reference from :func:`shared_llama`; the last one closes the ``Llama``."""
    with _lock:
        left = _users.get(llm, 1) - 1
        if left > 0:
            _users[llm] = left
            return
        _users.pop(llm, None)
    llm.close()
