"""The exceptions raised by llamacpp_integrations.

Every failure inside the native engine arrives as one of these, with a message that names the
cause; nothing a caller passes can abort the process.
"""

from __future__ import annotations

__all__ = [
    "ContextWindowExceededError",
    "DecodeError",
    "EngineClosedError",
    "GrammarError",
    "InvalidParameterError",
    "KVCacheFullError",
    "LlamaError",
    "ModelLoadError",
]


class LlamaError(Exception):
    """Base class of every error raised by the engine."""


class ModelLoadError(LlamaError, OSError):
    """The model file is missing, unreadable, not GGUF, truncated, or was refused by llama.cpp."""


class GrammarError(LlamaError, ValueError):
    """A GBNF grammar, or a JSON schema converted to one, does not parse."""


class ContextWindowExceededError(LlamaError, ValueError):
    """The prompt does not fit in the context window (n_ctx)."""


class DecodeError(LlamaError, RuntimeError):
    """llama.cpp failed to evaluate a batch."""


class InvalidParameterError(LlamaError, ValueError):
    """A parameter is out of range (token ids, sizes, sampling values)."""


class EngineClosedError(LlamaError, RuntimeError):
    """The model was closed while the request was pending, or used after close()."""


class KVCacheFullError(LlamaError, RuntimeError):
    """The KV pool that the model's slots share (``kv_unified=True``) filled up while this request
    was generating, and no idle conversation was left to evict: the request was ended so the
    others can finish. Raise ``n_ctx``, lower ``n_seq_max``, or give each slot its own cells
    (``kv_unified=False``, the default)."""
