"""LangChain messages to OpenAI-shaped chat messages, and responses back to ``AIMessage``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk

from ..errors import InvalidParameterError
from ..types import Usage

__all__ = [
    "ai_message",
    "ai_message_chunk",
    "to_openai_messages",
    "usage_metadata",
]


def _text(content: str | list[str | dict[str, Any]], role: str) -> str:
    """The text of a message's content; a non-text block (an image, audio) is refused, since
    the engine only reads text."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") in ("text", "text-plain") or (
            "text" in block and "type" not in block
        ):
            parts.append(str(block.get("text", "")))
        elif block.get("type") in ("tool_use", "tool_call", "reasoning", "thinking"):
            continue  # carried by tool_calls / not sent back to the model
        else:
            raise InvalidParameterError(
                f"a {role} message has a {block.get('type')!r} content block; this model "
                "reads text only"
            )
    return "".join(parts)


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Converts LangChain messages to the ``{"role", "content", ...}`` dicts our chat template
    renders."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg: dict[str, Any]
        if isinstance(m, SystemMessage):
            msg = {"role": "system", "content": _text(m.content, "system")}
        elif isinstance(m, HumanMessage):
            msg = {"role": "user", "content": _text(m.content, "user")}
        elif isinstance(m, AIMessage):
            msg = {"role": "assistant", "content": _text(m.content, "assistant")}
            if m.tool_calls:
                msg["tool_calls"] = [
                    {
                        "id": tc.get("id") or f"call_{i}",
                        "type": "function",
                        "function": {"name": tc["name"], "arguments": json.dumps(tc["args"])},
                    }
                    for i, tc in enumerate(m.tool_calls)
                ]
            reasoning = m.additional_kwargs.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                msg["reasoning_content"] = reasoning
        elif isinstance(m, ToolMessage):
            content = m.content
            if not isinstance(content, str):
                try:
                    content = _text(content, "tool")
                except InvalidParameterError:
                    content = json.dumps(content)
            msg = {"role": "tool", "content": content, "tool_call_id": m.tool_call_id}
            if m.status == "error" and not content:
                msg["content"] = "error"
        elif isinstance(m, FunctionMessage):
            msg = {"role": "tool", "content": _text(m.content, "function"), "name": m.name}
        elif isinstance(m, ChatMessage):
            msg = {"role": m.role, "content": _text(m.content, m.role)}
        else:
            raise InvalidParameterError(f"unsupported message type {type(m).__name__}")
        if m.name and "name" not in msg and not isinstance(m, ToolMessage):
            msg["name"] = m.name
        out.append(msg)
    return out


def usage_metadata(usage: Usage) -> UsageMetadata:
    """LangChain usage from OpenAI usage (cached prompt tokens as ``cache_read``)."""
    details: InputTokenDetails = {
        "cache_read": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    }
    out = {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
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
            args = json.loads(fn.get("arguments") or "{}")
            if not isinstance(args, dict):
                raise ValueError("the arguments are not a JSON object")
            calls.append(tool_call(name=fn.get("name", ""), args=args, id=tc.get("id")))
        except ValueError as e:
            invalid.append(
                invalid_tool_call(
                    name=fn.get("name"), args=fn.get("arguments"), id=tc.get("id"), error=str(e)
                )
            )
    return calls, invalid


def ai_message(
    message: dict[str, Any], usage: Usage | None, response_metadata: dict[str, Any]
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
        usage_metadata=usage_metadata(usage) if usage else None,
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
