"""``LlamaCppEmbeddings``: LangChain embeddings from a GGUF model, in-process."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field

from ._common import LlamaLoadFields

__all__ = ["LlamaCppEmbeddings"]


class LlamaCppEmbeddings(LlamaLoadFields, Embeddings):
    """Sentence embeddings from a GGUF model, computed in-process on llama.cpp.

    A drop-in replacement for ``langchain_community.embeddings.LlamaCppEmbeddings``. A list of
    texts is embedded natively in as few batches as possible (several sequences per decode).
    Models that declare a pooling type (embedding models) use it; others are mean-pooled.
    Vectors have unit length unless ``normalize=False``.

    Setup:
        .. code-block:: bash

            pip install "llamacpp-integrations[langchain]"

    Instantiate:
        .. code-block:: python

            from llamacpp_integrations.langchain import LlamaCppEmbeddings

            emb = LlamaCppEmbeddings(model_path="nomic-embed-text-v1.5.Q8_0.gguf")

    Embed:
        .. code-block:: python

            vectors = emb.embed_documents(["first text", "second text"])
            query = emb.embed_query("a question")

    Async:
        .. code-block:: python

            await emb.aembed_documents(["first text", "second text"])
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    n_seq_max: int = Field(default=8, ge=1)
    """Texts embedded together in one decode (at most ``n_batch`` tokens in all)."""
    normalize: bool = True
    """Scale vectors to unit Euclidean length."""
    truncate: bool = True
    """Cut texts longer than ``n_batch`` tokens (False: raise)."""
    device: str | None = None
    """Accepted for compatibility; the device follows ``n_gpu_layers`` and the build."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, computed in native batches."""
        if not texts:
            return []
        return self.llama.embed(texts, normalize=self.normalize, truncate=self.truncate)

    def embed_query(self, text: str) -> list[float]:
        """The vector of one text."""
        return self.llama.embed(text, normalize=self.normalize, truncate=self.truncate)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` without blocking the event loop."""
        if not texts:
            return []
        vectors: list[list[float]] = await self.llama.aembed(
            texts, normalize=self.normalize, truncate=self.truncate
        )
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` without blocking the event loop."""
        vector: list[float] = await self.llama.aembed(
            text, normalize=self.normalize, truncate=self.truncate
        )
        return vector
