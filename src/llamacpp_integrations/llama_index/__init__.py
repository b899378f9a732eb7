"""LlamaIndex integration: ``LlamaCPP`` (a function-calling LLM) and ``LlamaCppEmbedding``.

Needs the ``llama-index`` extra (``pip install "llamacpp-integrations[llama-index]"``).

Example:
    >>> from llama_index.core import Settings, VectorStoreIndex
    >>> from llamacpp_integrations.llama_index import LlamaCPP, LlamaCppEmbedding
    >>> Settings.llm = LlamaCPP()  # the default model, or model_path=... / model_url=...
    >>> Settings.embed_model = LlamaCppEmbedding()
    >>> Settings.tokenizer = Settings.llm.tokenizer  # prompt budgets in the model's tokens
    >>> index = VectorStoreIndex.from_documents(documents)
    >>> print(index.as_query_engine().query("..."))
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "llamacpp_integrations.llama_index needs llama-index-core: "
        'pip install "llamacpp-integrations[llama-index]"'
    ) from e

from .download import download_model
from .embeddings import LlamaCppEmbedding
from .llms import LlamaCPP

__all__ = ["LlamaCPP", "LlamaCppEmbedding", "download_model"]
