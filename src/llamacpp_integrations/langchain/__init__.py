"""LangChain integration: ``ChatLlamaCpp``, ``LlamaCpp`` and ``LlamaCppEmbeddings``.

Drop-in replacements for the langchain_community classes of the same names, on our own
llama.cpp engine. Needs ``langchain-core`` (``pip install "llamacpp-integrations[langchain]"``).
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "llamacpp_integrations.langchain needs langchain-core: "
        'pip install "llamacpp-integrations[langchain]"'
    ) from e

from .chat_models import ChatLlamaCpp
from .embeddings import LlamaCppEmbeddings
from .llms import LlamaCpp

__all__ = ["ChatLlamaCpp", "LlamaCpp", "LlamaCppEmbeddings"]
