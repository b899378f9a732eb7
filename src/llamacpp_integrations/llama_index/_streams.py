"""Engine streams (OpenAI-shaped chunk dicts) as LlamaIndex response generators.

Closing a generator closes the engine stream, which cancels the generation.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    MessageRole,
)

from ._messages import ChatStreamAccumulator, usage_kwargs

__all__ = [
    "achat_from_completion_stream",
    "achat_stream",
    "acompletion_stream",
    "chat_from_completion_stream",
    "chat_stream",
    "completion_stream",
    "text_as_chat",
]


def text_as_chat(response: CompletionResponse) -> ChatResponse:
    """A completion response as a chat response (the text as the assistant's message)."""
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=response.text),
        delta=response.delta,
        raw=response.raw,
        logprobs=response.logprobs,
        additional_kwargs=response.additional_kwargs,
    )


def chat_stream(stream: Any) -> ChatResponseGen:
    acc = ChatStreamAccumulator()
    try:
        for chunk in stream:
            response = acc.add(chunk)
            if response is not None:
                yield response
    finally:
        stream.close()


async def achat_stream(stream: Any) -> ChatResponseAsyncGen:
    acc = ChatStreamAccumulator()
    try:
        async for chunk in stream:
            response = acc.add(chunk)
            if response is not None:
                yield response
    finally:
        stream.close()


def _completion_chunk_text(chunk: Any) -> str:
    choice = chunk["choices"][0]
    if "delta" in choice:
        return str(choice["delta"].get("content") or "")
    return str(choice.get("text") or "")


def completion_stream(stream: Any) -> CompletionResponseGen:
    text = ""
    try:
        for chunk in stream:
            delta = _completion_chunk_text(chunk)
            text += delta
            if delta or "usage" in chunk:
                yield _completion_chunk(text, delta, chunk)
    finally:
        stream.close()


async def acompletion_stream(stream: Any) -> CompletionResponseAsyncGen:
    text = ""
    try:
        async for chunk in stream:
            delta = _completion_chunk_text(chunk)
            text += delta
            if delta or "usage" in chunk:
                yield _completion_chunk(text, delta, chunk)
    finally:
        stream.close()


def _completion_chunk(text: str, delta: str, chunk: Any) -> CompletionResponse:
    return CompletionResponse(
        text=text, delta=delta, raw=dict(chunk), additional_kwargs=usage_kwargs(chunk)
    )


def chat_from_completion_stream(stream: Any) -> ChatResponseGen:
    for r in completion_stream(stream):
        yield text_as_chat(r)


async def achat_from_completion_stream(stream: Any) -> ChatResponseAsyncGen:
    async for r in acompletion_stream(stream):
        yield text_as_chat(r)
