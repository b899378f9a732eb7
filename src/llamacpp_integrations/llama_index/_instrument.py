"""LlamaIndex instrumentation for our LLM: the dispatcher, spans and the callback decorators,
typed so that decorated methods keep their signatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

# re-exported by llama_index.core.instrumentation without an __all__ entry
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

__all__ = ["chat_callback", "completion_callback", "dispatcher", "span"]

dispatcher = get_dispatcher("llamacpp_integrations.llama_index")

_F = TypeVar("_F", bound=Callable[..., Any])


def chat_callback(f: _F) -> _F:
    """``@llm_chat_callback()``: callback-manager and instrumentation events of a chat method."""
    return cast(_F, llm_chat_callback()(f))


def completion_callback(f: _F) -> _F:
    """``@llm_completion_callback()``: the same for a completion method."""
    return cast(_F, llm_completion_callback()(f))


def span(f: _F) -> _F:
    """An instrumentation span around the method."""
    return cast(_F, dispatcher.span(f))
