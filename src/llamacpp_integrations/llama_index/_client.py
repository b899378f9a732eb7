"""What ``LlamaCPP`` and ``LlamaCppEmbedding`` share: the ``Llama`` they run on, loading one
from the Hugging Face Hub, and giving it back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from typing_extensions import Self

from .._shared import release
from ..hub import from_hub

if TYPE_CHECKING:
    from ..llama import Llama

__all__ = ["ClientMixin"]


class ClientMixin:
    """Needs the private attributes ``_client`` (the ``Llama``), ``_owns_client`` (loaded by
    this instance) and ``_shared`` (taken from the process's shared engines)."""

    if TYPE_CHECKING:
        _client: Llama
        _owns_client: bool
        _shared: bool

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str, **kwargs: Any) -> Self:
        """Loads a GGUF file from the Hugging Face Hub (see ``hub.from_hub``)."""
        return from_hub(cls, repo_id, filename, kwargs)

    @property
    def client(self) -> Llama:
        """The :class:`~llamacpp_integrations.Llama` engine this runs on."""
        return self._client

    def close(self) -> None:
        """Releases the engine (unless it was passed in as ``client``; a shared one closes
        when its last adapter is closed). Idempotent."""
        if self._owns_client:
            self._owns_client = False
            if self._shared:
                release(self._client)
            else:
                self._client.close()
