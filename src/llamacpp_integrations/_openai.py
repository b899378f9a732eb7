"""OpenAI-shaped values that the LangChain and LlamaIndex adapters both build or read.

Each adapter converts its framework's types on top of the framework's own converters; what they
share is here, once: tool calls and their JSON arguments, message content (text and images),
the JSON-schema ``response_format``, and token usage. Requests are normalised further in the
engine layer (``_chat``: tools, ``tool_choice``, legacy function calling), not in the adapters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .errors import InvalidParameterError

__all__ = [
    "Usage",
    "arguments_json",
    "content_of",
    "json_schema_format",
    "parse_arguments",
    "tool_call",
    "usage_of",
]

# content parts that carry no text for the model: reasoning is not sent back, tool calls travel
# in ``tool_calls``, cache points mean nothing to a local model
_SKIPPED_PARTS = frozenset({"reasoning", "thinking", "tool_use", "tool_call", "cache_point"})
_TEXT_PARTS = frozenset({"text", "text-plain", "input_text", "output_text"})


def arguments_json(arguments: Any) -> str:
    """A tool call's arguments as the JSON text OpenAI messages carry (``"{}"`` for none)."""
    if isinstance(arguments, str):
        return arguments or "{}"
    try:
        return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidParameterError(f"tool call arguments must be JSON-serializable: {e}") from e


def tool_call(name: str, arguments: Any, call_id: str | None, index: int) -> dict[str, Any]:
    """One OpenAI tool call; a call without an id gets ``call_<index>``."""
    return {
        "id": call_id or f"call_{index}",
        "type": "function",
        "function": {"name": name, "arguments": arguments_json(arguments)},
    }


def parse_arguments(text: str | None) -> dict[str, Any]:
    """The arguments of a finished tool call; ValueError when they are not a JSON object."""
    value = json.loads(text or "{}")
    if not isinstance(value, dict):
        raise ValueError("the arguments are not a JSON object")
    return value


def content_of(
    content: str | Sequence[Any] | None, where: str, *, images: bool = True
) -> str | list[Any]:
    """A message's content as the engine takes it: its text (parts joined by newlines), or,
    when it holds images, the list of its text and ``image_url`` parts in order.

    Raises:
        InvalidParameterError: A part holds audio or a file (or an image, with images=False).
    """
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    parts: list[Any] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            parts.append({"type": "text", "text": part})
            continue
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in _TEXT_PARTS or (kind is None and isinstance(part, Mapping) and "text" in part):
            texts.append(str(part.get("text", "")))
            parts.append({"type": "text", "text": texts[-1]})
        elif kind == "image_url" and images:
            parts.append(part)
        elif kind not in _SKIPPED_PARTS:
            raise InvalidParameterError(
                f"{where} has a {kind or type(part).__name__!r} content part; this model reads "
                + ("text and images only" if images else "text only")
            )
    if len(parts) > len(texts):
        return parts
    return "\n".join(texts)


def json_schema_format(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``response_format`` that makes the reply follow ``schema`` (grammar-constrained)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": dict(schema), "strict": True},
    }


class Usage(NamedTuple):
    """Token counts of a response."""

    prompt: int
    completion: int
    total: int
    cached: int


def usage_of(response: Mapping[str, Any]) -> Usage | None:
    """The token counts of an OpenAI response or final chunk; None when it has none."""
    usage = response.get("usage")
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt=int(usage["prompt_tokens"]),
        completion=int(usage["completion_tokens"]),
        total=int(usage["total_tokens"]),
        cached=int(details.get("cached_tokens", 0)),
    )
