"""Embeddings: ``Llama.embed`` and ``Llama.create_embedding`` (OpenAI ``list`` of ``embedding``).

The native engine packs several inputs into one decode (one sequence each) and pools them in
C++: with the model's own pooling type when the GGUF declares one, otherwise the mean of the
token embeddings. Any ``Llama`` can embed; the context switches to embedding output for the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, overload

from . import _core
from .errors import InvalidParameterError
from .types import EmbeddingResponse

__all__ = ["EmbeddingMixin"]


class EmbeddingMixin:
    """Sentence embeddings from the loaded model."""

    # provided by Llama
    model_path: str

    def _require_engine(self) -> _core.Engine:
        raise NotImplementedError

    def _require_model(self) -> _core.Model:
        raise NotImplementedError

    def _embed_tokens(
        self, texts: Sequence[str], normalize: bool, truncate: bool
    ) -> tuple[list[list[float]], int]:
        engine = self._require_engine()
        model = self._require_model()
        limit = int(engine.n_embed_max)
        inputs: list[list[int]] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidParameterError(f"input {i} must be a str, not {type(text).__name__}")
            tokens = list(model.tokenize(text, True, False))
            if not tokens:
                raise InvalidParameterError(f"input {i} is empty: there is nothing to embed")
            if truncate and len(tokens) > limit:
                tokens = tokens[:limit]
            inputs.append(tokens)
        vectors = engine.embed(inputs, normalize=2 if normalize else -1)
        return [list(v) for v in vectors], sum(len(t) for t in inputs)

    @staticmethod
    def _texts(input: str | Sequence[str]) -> tuple[list[str], bool]:
        if isinstance(input, str):
            return [input], True
        if isinstance(input, (bytes, bytearray)) or not isinstance(input, Sequence):
            raise InvalidParameterError("input must be a str or a list of str")
        return list(input), False

    @overload
    def embed(
        self, input: str, normalize: bool = ..., truncate: bool = ..., return_count: bool = ...
    ) -> list[float]: ...
    @overload
    def embed(
        self,
        input: list[str] | tuple[str, ...],
        normalize: bool = ...,
        truncate: bool = ...,
        return_count: bool = ...,
    ) -> list[list[float]]: ...

    def embed(
        self,
        input: str | Sequence[str],
        normalize: bool = False,
        truncate: bool = True,
        return_count: bool = False,
    ) -> Any:
        """The embedding of a text (a list of floats), or of each text in a list.

        Args:
            input: A text or a list of texts; all of a list go through the engine together.
            normalize: Scale each vector to unit Euclidean length.
            truncate: Cut inputs longer than one batch (``n_batch``, or ``n_ubatch`` for
                pooled models); when False, such an input raises ``InvalidParameterError``.
            return_count: Also return the number of tokens embedded, as ``(vectors, count)``.

        Unlike llama-cpp-python, models without a pooling type are mean-pooled rather than
        returning one vector per token.
        """
        return self._embed_any(input, normalize, truncate, return_count)

    def _embed_any(
        self, input: str | Sequence[str], normalize: bool, truncate: bool, return_count: bool
    ) -> Any:
        texts, single = self._texts(input)
        vectors, count = self._embed_tokens(texts, normalize, truncate) if texts else ([], 0)
        out: Any = vectors[0] if single else vectors
        return (out, count) if return_count else out

    async def aembed(
        self, input: str | Sequence[str], normalize: bool = False, truncate: bool = True
    ) -> Any:
        """:meth:`embed` for asyncio (the engine works on its own thread; the loop stays free)."""
        return await asyncio.to_thread(self._embed_any, input, normalize, truncate, False)

    def create_embedding(
        self,
        input: str | Sequence[str],
        model: str | None = None,
        normalize: bool = False,
        truncate: bool = True,
    ) -> EmbeddingResponse:
        """OpenAI-shaped embeddings: ``{"object": "list", "data": [{"embedding": [...]}],
        "usage": {...}}``. Arguments as in :meth:`embed`."""
        texts, _ = self._texts(input)
        vectors, count = self._embed_tokens(texts, normalize, truncate) if texts else ([], 0)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)
            ],
            "model": model or self.model_path,
            "usage": {"prompt_tokens": count, "total_tokens": count},
        }
