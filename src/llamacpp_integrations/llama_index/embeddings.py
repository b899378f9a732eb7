"""``LlamaCppEmbedding``: LlamaIndex embeddings from a GGUF model running in-process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager

from .._loading import check_load
from .._shared import shared_llama
from ..llama import Llama
from ..models import default_model_path
from ._client import ClientMixin
from .download import download_model

__all__ = ["LlamaCppEmbedding"]

DEFAULT_EMBED_CTX = 1024
"""Tokens per decode of the embedding engine, and the longest input (longer ones are cut).
LlamaIndex splits documents into chunks of up to 1024 tokens by default; a smaller window would
embed only the start of such chunks. (Measured: 16 texts of ~190 tokens embed in the same time
with 512 and 1024.)"""

DEFAULT_EMBED_SEQS = 8
"""Inputs packed into one decode."""


class LlamaCppEmbedding(ClientMixin, BaseEmbedding):
    """Text embeddings from a GGUF model running in-process on llama.cpp.

    A batch of texts goes through the native engine together: it packs up to ``n_seq_max``
    inputs into one decode and pools each (with the model's pooling type, or the mean of the
    token embeddings for a model without one). Inputs longer than ``n_ctx`` tokens are cut.

    Setup:
        .. code-block:: bash

            pip install "llamacpp-integrations[llama-index]"

    Instantiate:
        .. code-block:: python

            from llamacpp_integrations.llama_index import LlamaCppEmbedding

            embed_model = LlamaCppEmbedding(model_path="nomic-embed-text-v1.5.Q8_0.gguf",
                                            query_instruction="search_query: ",
                                            text_instruction="search_document: ")
            embed_model = LlamaCppEmbedding()  # the default model: small, for trying things out

    Invoke:
        .. code-block:: python

            embed_model.get_query_embedding("What is llama.cpp?")
            embed_model.get_text_embedding_batch(["a", "b", "c"])

    Async:
        .. code-block:: python

            await embed_model.aget_query_embedding("What is llama.cpp?")

    With LlamaIndex:
        .. code-block:: python

            from llama_index.core import Settings, VectorStoreIndex
            Settings.embed_model = embed_model
            index = VectorStoreIndex.from_documents(documents)
    """

    model_path: str | None = Field(
        default=None, description="Path to a GGUF file; the default model when None."
    )
    """Path to a GGUF file. With neither a path nor a URL, the default model is used."""
    model_url: str | None = Field(
        default=None, description="URL of a GGUF file to download (once) when no model_path."
    )
    """URL of a GGUF file, downloaded once into the cache when ``model_path`` is not given."""
    model_sha256: str | None = Field(
        default=None, description="Expected SHA-256 of the file at model_url."
    )
    """Expected SHA-256 (hex) of the file at ``model_url``."""
    n_ctx: int = Field(default=DEFAULT_EMBED_CTX, gt=0, description="Longest input in tokens.")
    """Tokens per decode (``n_ctx = n_batch = n_ubatch``): the longest input; longer ones are
    cut to it."""
    n_seq_max: int = Field(default=DEFAULT_EMBED_SEQS, gt=0, description="Inputs per decode.")
    """How many inputs one decode packs together."""
    normalize: bool = Field(default=True, description="Scale vectors to unit length.")
    """Scale every vector to unit Euclidean length (cosine similarity = dot product)."""
    query_instruction: str | None = Field(
        default=None, description="Text put in front of every query."
    )
    """Text put in front of queries (e.g. ``"search_query: "`` for nomic-embed)."""
    text_instruction: str | None = Field(
        default=None, description="Text put in front of every document text."
    )
    """Text put in front of document texts (e.g. ``"search_document: "``)."""
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Arguments of the Llama constructor."
    )
    """More arguments of the :class:`~llamacpp_integrations.Llama` constructor
    (``n_gpu_layers``, ``n_threads``, ...)."""
    verbose: bool = Field(default=False, description="Log llama.cpp's output.")
    """Forward llama.cpp's log to the ``llamacpp_integrations`` logger."""

    _client: Llama = PrivateAttr()
    _owns_client: bool = PrivateAttr(default=True)
    _shared: bool = PrivateAttr(default=False)

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        model_url: str | None = None,
        model_sha256: str | None = None,
        n_ctx: int = DEFAULT_EMBED_CTX,
        n_seq_max: int = DEFAULT_EMBED_SEQS,
        normalize: bool = True,
        query_instruction: str | None = None,
        text_instruction: str | None = None,
        embed_batch_size: int = 32,
        model_kwargs: dict[str, Any] | None = None,
        verbose: bool = False,
        callback_manager: CallbackManager | None = None,
        client: Llama | None = None,
        share_client: bool = True,
        **kwargs: Any,
    ) -> None:
        """Loads the model (or shares ``client``).

        Args:
            model_path: Path to a GGUF file; the default model when None (and no URL).
            model_url: URL of a GGUF file, downloaded once into the cache.
            model_sha256: Expected SHA-256 (hex) of the file at ``model_url``.
            n_ctx: Tokens per decode and the longest input; longer inputs are cut.
            n_seq_max: How many inputs one decode packs together.
            normalize: Scale vectors to unit length.
            query_instruction: Text put in front of queries.
            text_instruction: Text put in front of document texts.
            embed_batch_size: Texts LlamaIndex hands over per call (the engine then packs
                them ``n_seq_max`` at a time).
            model_kwargs: More arguments of the :class:`~llamacpp_integrations.Llama`
                constructor.
            verbose: Forward llama.cpp's log to the ``llamacpp_integrations`` logger.
            callback_manager: LlamaIndex callback manager.
            client: A :class:`~llamacpp_integrations.Llama` to use instead of loading one.
            share_client: Use the process's one ``Llama`` for this GGUF and these settings,
                shared with every adapter that names them (False: load a separate one).
            **kwargs: Other ``BaseEmbedding`` fields (``model_name``, ``num_workers``, ...).

        Raises:
            ModelLoadError: The model file is missing or invalid, or the download failed.
            TypeError: An unknown key in ``model_kwargs`` (named, with the closest
                ``LoadOptions`` key), even with ``client``.
            InvalidParameterError: A bad value in ``model_kwargs``.
        """
        fields: dict[str, Any] = dict(
            model_path=os.fspath(model_path) if model_path is not None else None,
            model_url=model_url,
            model_sha256=model_sha256,
            n_ctx=n_ctx,
            n_seq_max=n_seq_max,
            normalize=normalize,
            query_instruction=query_instruction,
            text_instruction=text_instruction,
            embed_batch_size=embed_batch_size,
            model_kwargs=dict(model_kwargs or {}),
            verbose=verbose,
            **kwargs,
        )
        if callback_manager is not None:
            fields["callback_manager"] = callback_manager
        super().__init__(**fields)
        check_load(self.model_kwargs, "LlamaCppEmbedding model_kwargs")
        if client is not None:
            self._client = client
            self._owns_client = False
            self.model_path = client.model_path
        else:
            if self.model_path is None:
                if self.model_url is not None:
                    self.model_path = str(download_model(self.model_url, sha256=self.model_sha256))
                else:
                    self.model_path = default_model_path()
            params: dict[str, Any] = {
                "n_ctx": self.n_ctx,
                "n_batch": self.n_ctx,
                "n_ubatch": self.n_ctx,
                "n_seq_max": self.n_seq_max,
                "verbose": self.verbose,
            }
            params.update(self.model_kwargs)
            params["model_path"] = self.model_path
            self._client = shared_llama(share_client, **params)
            self._owns_client = True
            self._shared = share_client
        if self.model_name == "unknown":
            self.model_name = Path(self.model_path).name

    @classmethod
    def class_name(cls) -> str:
        return "LlamaCppEmbedding"

    def _query(self, query: str) -> str:
        return (self.query_instruction or "") + query

    def _texts(self, texts: list[str]) -> list[str]:
        prefix = self.text_instruction or ""
        return [prefix + t for t in texts]

    def _get_query_embedding(self, query: str) -> Embedding:
        """The embedding of a query.

        Args:
            query: The query text.

        Returns:
            Its vector.
        """
        vector: list[float] = self._client.embed(self._query(query), normalize=self.normalize)
        return vector

    async def _aget_query_embedding(self, query: str) -> Embedding:
        """The embedding of a query, without blocking the event loop.

        Args:
            query: The query text.

        Returns:
            Its vector.
        """
        vector: list[float] = await self._client.aembed(
            self._query(query), normalize=self.normalize
        )
        return vector

    def _get_text_embedding(self, text: str) -> Embedding:
        """The embedding of a document text.

        Args:
            text: The text.

        Returns:
            Its vector.
        """
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        """The embedding of a document text, without blocking the event loop.

        Args:
            text: The text.

        Returns:
            Its vector.
        """
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """The embeddings of document texts, packed natively into as few decodes as possible.

        Args:
            texts: The texts.

        Returns:
            One vector per text.
        """
        if not texts:
            return []
        vectors: list[list[float]] = self._client.embed(
            self._texts(texts), normalize=self.normalize
        )
        return vectors

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        """:meth:`_get_text_embeddings` without blocking the event loop.

        Args:
            texts: The texts.

        Returns:
            One vector per text.
        """
        if not texts:
            return []
        vectors: list[list[float]] = await self._client.aembed(
            self._texts(texts), normalize=self.normalize
        )
        return vectors
