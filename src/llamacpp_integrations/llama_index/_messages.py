"""Conversions between LlamaIndex chat types and the engine's OpenAI-shaped dictionaries.

The engine renders prompts with the model's own chat template and parses tool calls itself; this
module only moves data between the two shapes (no prompt formatting, no output parsing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    ImageBlock,
    LogProb,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json

from .._openai import parse_arguments, tool_call, usage_of
from ..errors import InvalidParameterError

__all__ = [
    "ChatStreamAccumulator",
    "chat_response",
    "completion_response",
    "to_openai_messages",
    "tool_calls_of",
    "tool_selections",
    "usage_kwargs",
]

_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def _openai_tool_call(call: Any, index: int) -> dict[str, Any]:
    """One OpenAI tool call from a ``ToolCallBlock`` or a stored ``additional_kwargs`` entry."""
    if isinstance(call, ToolCallBlock):
        return tool_call(call.tool_name, call.tool_kwargs, call.tool_call_id, index)
    if not isinstance(call, Mapping):
        dump = getattr(call, "model_dump", None)  # e.g. an OpenAI SDK object
        call = dump() if callable(dump) else {}
    fn = call.get("function") or {}
    return tool_call(fn.get("name", ""), fn.get("arguments"), call.get("id"), index)


def _image_url(block: ImageBlock, index: int) -> str:
    """An ImageBlock as the URL of an OpenAI image part: its bytes as a data: URL, its path or
    its URL as they are (the engine's image policy decides what may be read or fetched)."""
    if block.image is not None:
        data = block.resolve_image(as_base64=True).read()
        mime = block.image_mimetype or "image/png"
        return f"data:{mime};base64,{data.decode('ascii')}"
    if block.path is not None:
        return str(block.path)
    if block.url is not None:
        return str(block.url)
    raise InvalidParameterError(f"message {index} holds an ImageBlock with no image, path or url")


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex messages to OpenAI chat messages (text, tool calls and tool results).

    Raises:
        InvalidParameterError: A message holds an audio, video or document block (images
            need a vision projector: ``mmproj_path``).
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.role, str(getattr(message.role, "value", message.role)))
        texts: list[str] = []
        parts: list[dict[str, Any]] = []  # text and images in order, once an image appears
        calls: list[Any] = []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                texts.append(block.text)
                parts.append({"type": "text", "text": block.text})
            elif isinstance(block, ImageBlock):
                parts.append({"type": "image_url", "image_url": {"url": _image_url(block, i)}})
            elif isinstance(block, ToolCallBlock):
                calls.append(block)
            elif isinstance(block, (ThinkingBlock, CachePoint)):
                continue  # reasoning is not sent back; cache points mean nothing here
            else:
                raise InvalidParameterError(
                    f"message {i} holds a {type(block).__name__}: messages may hold text, "
                    "images (with a vision projector) and tool calls only"
                )
        if not calls:
            calls = list(message.additional_kwargs.get("tool_calls") or [])
        content: str | list[dict[str, Any]] = "\n".join(texts)
        if len(parts) > len(texts):
            content = parts
        item: dict[str, Any] = {"role": role, "content": content}
        if calls and role == "assistant":
            item["tool_calls"] = [_openai_tool_call(c, n) for n, c in enumerate(calls)]
            if not item["content"]:
                item["content"] = None
        if role == "tool":
            call_id = message.additional_kwargs.get("tool_call_id")
            if call_id:
                item["tool_call_id"] = str(call_id)
            elif message.role == MessageRole.FUNCTION:
                item["role"] = "function"  # the engine pairs it with the call it answers
            name = message.additional_kwargs.get("name")
            if name:
                item["name"] = str(name)
        out.append(item)
    return out


def _parsed_arguments(arguments: str) -> dict[str, Any] | str:
    try:
        return parse_arguments(arguments)
    except ValueError:
        return arguments  # still streaming in


def _assistant_message(
    content: str, reasoning: str, tool_calls: Sequence[Mapping[str, Any]]
) -> ChatMessage:
    blocks: list[Any] = []
    if reasoning:
        blocks.append(ThinkingBlock(content=reasoning))
    if content or not tool_calls:
        blocks.append(TextBlock(text=content))
    for call in tool_calls:
        fn = call["function"]
        blocks.append(
            ToolCallBlock(
                tool_call_id=call.get("id"),
                tool_name=fn.get("name", ""),
                tool_kwargs=_parsed_arguments(fn.get("arguments", "")),
            )
        )
    extra: dict[str, Any] = {}
    if tool_calls:
        extra["tool_calls"] = [
            {
                "id": c.get("id"),
                "type": "function",
                "function": dict(c["function"]),
            }
            for c in tool_calls
        ]
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)


def usage_kwargs(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Token counts of a response (for ``additional_kwargs``), empty when it has none."""
    usage = usage_of(raw)
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.total,
        "cached_tokens": usage.cached,
    }


def _chat_logprobs(choice: Mapping[str, Any]) -> list[list[LogProb]] | None:
    block = choice.get("logprobs")
    if not block:
        return None
    out: list[list[LogProb]] = []
    for entry in block.get("content") or []:
        top = entry.get("top_logprobs") or [entry]
        out.append(
            [LogProb(token=t["token"], logprob=t["logprob"], bytes=t.get("bytes", [])) for t in top]
        )
    return out


def chat_response(raw: Mapping[str, Any]) -> ChatResponse:
    """A ``chat.completion`` dictionary as a LlamaIndex ``ChatResponse``."""
    choice = raw["choices"][0]
    message = choice["message"]
    return ChatResponse(
        message=_assistant_message(
            message.get("content") or "",
            message.get("reasoning_content") or "",
            message.get("tool_calls") or [],
        ),
        raw=dict(raw),
        logprobs=_chat_logprobs(choice),
        additional_kwargs=usage_kwargs(raw),
    )


def completion_response(raw: Mapping[str, Any]) -> CompletionResponse:
    """A ``text_completion`` or ``chat.completion`` dictionary as a ``CompletionResponse``."""
    choice = raw["choices"][0]
    if "message" in choice:
        text = choice["message"].get("content") or ""
        logprobs = _chat_logprobs(choice)
    else:
        text = choice["text"]
        logprobs = None
        lp = choice.get("logprobs")
        if lp:
            logprobs = [
                [LogProb(token=tok, logprob=value, bytes=list(tok.encode()))]
                for tok, value in zip(lp["tokens"], lp["token_logprobs"], strict=True)
                if value is not None
            ]
    return CompletionResponse(
        text=text, raw=dict(raw), logprobs=logprobs, additional_kwargs=usage_kwargs(raw)
    )


class ChatStreamAccumulator:
    """Folds ``chat.completion.chunk`` deltas into successive ``ChatResponse`` objects.

    Each response carries the whole message so far (text, reasoning, tool calls with their
    arguments as far as they have arrived) and the new text in ``delta``.
    """

    def __init__(self) -> None:
        self.content = ""
        self.reasoning = ""
        self.calls: list[dict[str, Any]] = []

    def add(self, chunk: Mapping[str, Any]) -> ChatResponse | None:
        """The response after ``chunk``, or None when the chunk changed nothing visible."""
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        thinking = delta.get("reasoning_content") or ""
        self.content += text
        self.reasoning += thinking
        for part in delta.get("tool_calls") or []:
            index = int(part.get("index", len(self.calls)))
            while len(self.calls) <= index:
                self.calls.append({"id": None, "function": {"name": "", "arguments": ""}})
            call = self.calls[index]
            if part.get("id"):
                call["id"] = part["id"]
            fn = part.get("function") or {}
            if fn.get("name"):
                call["function"]["name"] = fn["name"]
            call["function"]["arguments"] += fn.get("arguments") or ""
        final = "usage" in chunk
        if not (text or thinking or delta.get("tool_calls") or final):
            return None
        extra = usage_kwargs(chunk)
        if thinking:
            extra["thinking_delta"] = thinking
        return ChatResponse(
            message=_assistant_message(self.content, self.reasoning, self.calls),
            delta=text,
            raw=dict(chunk),
            logprobs=_chat_logprobs(choice),
            additional_kwargs=extra,
        )


def tool_calls_of(message: ChatMessage) -> list[ToolCallBlock]:
    """The tool calls of an assistant message: its ``ToolCallBlock`` blocks, else the OpenAI
    calls stored in ``additional_kwargs["tool_calls"]``."""
    blocks = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
    if blocks:
        return blocks
    out = []
    for n, call in enumerate(message.additional_kwargs.get("tool_calls") or []):
        oa = _openai_tool_call(call, n)
        out.append(
            ToolCallBlock(
                tool_call_id=oa["id"],
                tool_name=oa["function"]["name"],
                tool_kwargs=oa["function"]["arguments"],
            )
        )
    return out


def tool_selections(message: ChatMessage) -> list[ToolSelection]:
    """The tool calls of a message as ``ToolSelection`` (partial arguments parse leniently)."""
    out: list[ToolSelection] = []
    for n, block in enumerate(tool_calls_of(message)):
        kwargs: Any = block.tool_kwargs
        if isinstance(kwargs, str):
            try:
                kwargs = parse_partial_json(kwargs) if kwargs.strip() else {}
            except (ValueError, TypeError):
                kwargs = {}
        out.append(
            ToolSelection(
                tool_id=block.tool_call_id or f"call_{n}",
                tool_name=block.tool_name,
                tool_kwargs=kwargs if isinstance(kwargs, dict) else {},
            )
        )
    return out
