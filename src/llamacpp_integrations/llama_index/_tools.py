"""Tool calling for ``LlamaCPP``: LlamaIndex's ``FunctionCallingLLM`` protocol (the arguments
of a chat with tools, at most one call unless parallel calls are allowed, the calls of a reply)
over the engine's own tool calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, ToolCallBlock
from llama_index.core.llms.llm import ToolSelection

from .._chat import normalize_tool_choice
from ._messages import tool_calls_of, tool_selections

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["ToolCallingMixin"]


class ToolCallingMixin:
    """The tool methods of ``FunctionCallingLLM``."""

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The arguments of :meth:`chat` for a chat with ``tools``.

        Args:
            tools: The tools the model may call.
            user_msg: A user message appended to the history.
            chat_history: The conversation so far.
            verbose: Unused (kept for the interface).
            allow_parallel_tool_calls: Let the model call several tools in one reply.
            tool_required: The model must call a tool (``tool_choice="required"``).
            tool_choice: ``"auto"``, ``"none"``, ``"required"``, a tool name, or an OpenAI
                ``{"type": "function", "function": {"name": ...}}``; overrides
                ``tool_required``.
            **kwargs: Generation arguments passed on to :meth:`chat`.

        Returns:
            Keyword arguments for :meth:`chat` / :meth:`achat` and their streaming forms.
        """
        messages = list(chat_history or [])
        if user_msg is not None:
            if isinstance(user_msg, str):
                user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
            messages.append(user_msg)
        out: dict[str, Any] = {"messages": messages, **kwargs}
        specs = [t.metadata.to_openai_tool(skip_length_check=True) for t in tools]
        if not specs:
            return out
        names = [s["function"]["name"] for s in specs]
        if tool_choice is None and tool_required:
            tool_choice = "required"
        choice = normalize_tool_choice(tool_choice, None, names)
        out.update(tools=specs, tool_choice=choice, parallel_tool_calls=allow_parallel_tool_calls)
        return out

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keeps only the first tool call unless parallel calls are allowed.

        Args:
            response: The reply of :meth:`chat_with_tools`.
            tools: The tools that were offered.
            allow_parallel_tool_calls: Keep every tool call.
            **kwargs: Unused.

        Returns:
            The response, with at most one tool call unless parallel calls are allowed.
        """
        if allow_parallel_tool_calls:
            return response
        calls = tool_calls_of(response.message)
        if len(calls) <= 1:
            return response
        message = response.message
        keep = calls[0]
        message.blocks = [
            b for b in message.blocks if not isinstance(b, ToolCallBlock) or b is keep
        ]
        if message.additional_kwargs.get("tool_calls"):
            message.additional_kwargs["tool_calls"] = message.additional_kwargs["tool_calls"][:1]
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls of a response (also of a partial, streamed one).

        Args:
            response: A response of :meth:`chat_with_tools` or a streamed chunk of it.
            error_on_no_tool_call: Raise when the response calls no tool.
            **kwargs: Unused.

        Returns:
            One ``ToolSelection`` per call, with the arguments as a dict.

        Raises:
            ValueError: No tool call and ``error_on_no_tool_call``.
        """
        selections = tool_selections(response.message)
        if not selections and error_on_no_tool_call:
            raise ValueError(
                "Expected at least one tool call, but the model answered in text: "
                f"{(response.message.content or '')[:200]!r}"
            )
        return selections
