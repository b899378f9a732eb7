"""Run GGUF models in-process on llama.cpp, for LangChain and LlamaIndex applications.

The public API is :class:`Llama` (llama-cpp-python's constructor and completion API on our own
native engine), the errors in :mod:`llamacpp_integrations.errors`, :func:`system_info` and the
default model helper :func:`default_model_path`. The LangChain and LlamaIndex adapters live in
the optional subpackages ``llamacpp_integrations.langchain`` and
``llamacpp_integrations.llama_index``; importing this package imports neither framework.
"""

from __future__ import annotations

import atexit

from . import _core
from ._completion import CompletionStream
from ._loading import LoadOptions
from ._sampling import SamplingOptions
from .errors import (
    ContextWindowExceededError,
    DecodeError,
    EngineClosedError,
    GrammarError,
    InvalidParameterError,
    KVCacheFullError,
    LlamaError,
    ModelLoadError,
)
from .llama import LLAMA_DEFAULT_SEED, Llama
from .models import default_model_path

__version__ = "0.1.0"

# At exit, daemon threads still waiting on a request stay parked in native code instead of
# re-entering a finalizing interpreter (which aborts the process; see native/bindings.h).
atexit.register(_core.begin_exit)

__all__ = [
    "LLAMA_DEFAULT_SEED",
    "CompletionStream",
    "ContextWindowExceededError",
    "DecodeError",
    "EngineClosedError",
    "GrammarError",
    "InvalidParameterError",
    "KVCacheFullError",
    "Llama",
    "LlamaError",
    "LoadOptions",
    "ModelLoadError",
    "SamplingOptions",
    "__version__",
    "backends",
    "default_model_path",
    "system_info",
]


def system_info() -> str:
    """llama.cpp's system info (CPU features), followed by the backends compiled into this build,
    e.g. ``... | BACKENDS = BLAS, CPU |`` after an OpenBLAS build."""
    return f"{_core.system_info().rstrip()} BACKENDS = {', '.join(backends())} |"


def backends() -> list[str]:
    """Names of the ggml backends registered in this build (always ``CPU``; ``BLAS``, ``CUDA``,
    ``Metal`` when built with them)."""
    return list(_core.backend_names())
