"""LangChain messages to OpenAI-shaped chat messages, and responses back to ``AIMessage``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk

from .._openai import content_of, parse_arguments, usage_of
from .._openai import tool_call as openai_tool_call

__all__ = [
    "ai_message",
    "ai_message_chunk",
    "to_openai_messages",
    "usage_metadata",
]


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat messages: LangChain's own converter, then what it
    leaves out (reasoning, legacy ``function_call``, ids of calls that have none), and content
    as text, or as text and ``image_url`` parts when it holds images (LangChain's converter
    turns its standard image blocks, base64 or URL, into ``image_url`` parts). A
    ``FunctionMessage`` stays a ``function`` message, which the engine pairs with the call it
    answers."""
    out: list[dict[str, Any]] = []
    converted = convert_to_openai_messages(list(messages), text_format="string")
    for i, (m, msg) in enumerate(zip(messages, converted, strict=True)):
        msg = dict(msg)
        msg["content"] = content_of(msg.get("content"), f"messages[{i}] ({msg.get('role')})")
        if isinstance(m, AIMessage):
            if m.tool_calls:
                msg["tool_calls"] = [
                    openai_tool_call(tc["name"], tc["args"], tc.get("id"), n)
                    for n, tc in enumerate(m.tool_calls)
                ]
            elif isinstance(m.additional_kwargs.get("function_call"), dict):
                msg["function_call"] = m.additional_kwargs["function_call"]
            reasoning = m.additional_kwargs.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                msg["reasoning_content"] = reasoning
        elif isinstance(m, ToolMessage) and m.status == "error" and not msg["content"]:
            msg["content"] = "error"
        out.append(msg)
    return out


def usage_metadata(response: Mapping[str, Any]) -> UsageMetadata | None:
    """LangChain usage from an OpenAI response (cached prompt tokens as ``cache_read``)."""
    usage = usage_of(response)
    if usage is None:
        return None
    details: InputTokenDetails = {"cache_read": usage.cached}
    out = {
        "input_tokens": usage.prompt,
        "output_tokens": usage.completion,
        "total_tokens": usage.total,
        "input_token_details": details,
    }
    # langchain-core marks the details NotRequired with Python 3.11's typing, which mypy's
    # 3.10 target does not see
    return cast(UsageMetadata, out)


def _parsed_tool_calls(
    raw: Sequence[dict[str, Any]],
) -> tuple[list[Any], list[Any]]:
    calls, invalid = [], []
    for tc in raw:
        fn = tc.get("function", {})
        try:
            args = parse_arguments(fn.get("arguments"))
            calls.append(tool_call(name=fn.get("name", ""), args=args, id=tc.get("id")))
        except ValueError as e:
            invalid.append(
                invalid_tool_call(
                    name=fn.get("name"), args=fn.get("arguments"), id=tc.get("id"), error=str(e)
                )
            )
    return calls, invalid


def ai_message(
    message: dict[str, Any], usage: UsageMetadata | None, response_metadata: dict[str, Any]
) -> AIMessage:
    """An ``AIMessage`` from an OpenAI ``chat.completion`` message."""
    calls, invalid = _parsed_tool_calls(message.get("tool_calls") or [])
    extra: dict[str, Any] = {}
    if message.get("reasoning_content"):
        extra["reasoning_content"] = message["reasoning_content"]
    return AIMessage(
        content=message.get("content") or "",
        additional_kwargs=extra,
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=usage,
        response_metadata=response_metadata,
    )


def ai_message_chunk(delta: dict[str, Any]) -> AIMessageChunk:
    """An ``AIMessageChunk`` from an OpenAI ``chat.completion.chunk`` delta."""
    extra: dict[str, Any] = {}
    if delta.get("reasoning_content"):
        extra["reasoning_content"] = delta["reasoning_content"]
    chunks = [
        tool_call_chunk(
            name=tc.get("function", {}).get("name"),
            args=tc.get("function", {}).get("arguments"),
            id=tc.get("id"),
            index=tc.get("index"),
        )
        for tc in delta.get("tool_calls") or []
    ]
    return AIMessageChunk(
        content=delta.get("content") or "", additional_kwargs=extra, tool_call_chunks=chunks
    )
