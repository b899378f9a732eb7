"""The ``model_url`` downloader, kept here for imports written before it moved.

The code lives in :mod:`llamacpp_integrations.download` (the LangChain adapters use it too);
this module re-exports it unchanged.
"""

from __future__ import annotations

from ..download import DEFAULT_TIMEOUT_S, download_model, model_url_cache_path

__all__ = ["DEFAULT_TIMEOUT_S", "download_model", "model_url_cache_path"]
