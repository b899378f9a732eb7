"""Chat completions: OpenAI-shaped requests in, OpenAI ``chat.completion`` responses out.

The engine owns the whole request (``Engine.submit_chat``): it renders the messages with the
chat template (llama.cpp's ``common/chat.h``), tokenizes them, sets up the tool-call or schema
grammar, generates, and parses the reply, into deltas while it streams and into the final
message at the end. This module only turns arguments into that one native call and native
results into OpenAI dictionaries.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from typing_extensions import Unpack

from . import _core
from ._completion import RequestStream, await_result, timings_of, usage_of, wait_result
from ._images import ImagePolicy, extract_images
from ._offload import renders_in_thread
from ._openai import tool_call
from ._params import bind_call, check_int, max_tokens_limit, sampling_values, stop_list
from ._sampling import SamplingOptions, with_sampling
from .errors import InvalidParameterError
from .types import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatMessageOut,
    ChatTokenLogprob,
    ToolCall,
)

CHAT_TEMPERATURE = 0.2
"""The default temperature of chat completions (llama-cpp-python's)."""

__all__ = [
    "ChatCompletionMixin",
    "ChatCompletionStream",
    "chat_logprobs",
    "normalize_tool_choice",
    "normalize_tools",
    "pair_function_messages",
    "read_grammar",
]


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidParameterError(f"{what} must be JSON-serializable: {e}") from e
    except RecursionError as e:
        raise InvalidParameterError(f"{what} nest too deeply to encode as JSON") from e


def normalize_tools(
    tools: Sequence[Mapping[str, Any]] | None, functions: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """OpenAI tools; the legacy ``functions`` become tools too."""
    out: list[dict[str, Any]] = [dict(t) for t in tools or []]
    for fn in functions or []:
        out.append({"type": "function", "function": dict(fn)})
    return out


def normalize_tool_choice(
    tool_choice: Any, function_call: Any = None, tool_names: Sequence[str] = ()
) -> str:
    """``"auto"``, ``"none"``, ``"required"`` or the name of the one function to call, from
    every spelling the OpenAI API and the frameworks use: those words, ``"any"`` (LangChain,
    Anthropic), a tool's name, ``{"type": "function", "function": {"name": ...}}``, True (the
    only tool) and False ("none"); the legacy ``function_call`` when ``tool_choice`` is None.
    A named function must be one of ``tool_names``."""
    choice = tool_choice if tool_choice is not None else function_call
    name: Any = None
    if choice is None:
        return "auto" if tool_names else "none"
    if choice is False:
        return "none"
    if choice is True:
        if len(tool_names) != 1:
            raise InvalidParameterError("tool_choice=True needs exactly one tool; name the tool")
        return tool_names[0]
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return choice
        if choice == "any":
            return "required"
        name = choice
    elif isinstance(choice, Mapping):
        fn = choice.get("function", choice)
        name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str) or not name:
        raise InvalidParameterError(
            f"tool_choice={choice!r}: expected 'auto', 'none', 'required', a tool name or "
            '{"type": "function", "function": {"name": ...}}'
        )
    if name not in tool_names:
        raise InvalidParameterError(
            f"tool_choice names {name!r}, which is not among the tools {list(tool_names)}"
        )
    return name


def pair_function_messages(messages: Sequence[Any]) -> Sequence[Any]:
    """Legacy function calling in OpenAI's current shape: an assistant ``function_call``
    becomes a tool call, and a ``function`` message (or a ``tool`` message without
    ``tool_call_id``) becomes the result of the latest unanswered call of its ``name``."""
    if not any(
        isinstance(m, Mapping)
        and (
            m.get("role") == "function"
            or "function_call" in m
            or (m.get("role") == "tool" and "tool_call_id" not in m)
        )
        for m in messages
    ):
        return messages
    out: list[Any] = []
    unanswered: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            out.append(m)  # the engine's validation names it
            continue
        role = m.get("role")
        if role == "assistant":
            m = dict(m)
            legacy = m.pop("function_call", None)
            if legacy and not m.get("tool_calls") and isinstance(legacy, Mapping):
                m["tool_calls"] = [
                    tool_call(str(legacy.get("name", "")), legacy.get("arguments"), None, 0)
                ]
            calls = [dict(c) if isinstance(c, Mapping) else c for c in m.get("tool_calls") or []]
            for n, c in enumerate(calls):
                if isinstance(c, dict) and not c.get("id"):
                    c["id"] = f"call_{i}_{n}"
            if calls:
                m["tool_calls"] = calls
            unanswered = [c for c in calls if isinstance(c, dict)]
        elif role == "function" or (role == "tool" and "tool_call_id" not in m):
            name = m.get("name")
            match = next(
                (c for c in unanswered if (c.get("function") or {}).get("name") == name), None
            )
            if match is None:
                raise InvalidParameterError(
                    f"messages[{i}] is the result of function {name!r}, which no earlier "
                    "assistant message called (a tool message needs 'tool_call_id')"
                )
            unanswered.remove(match)
            m = {**m, "role": "tool", "tool_call_id": match["id"]}
        out.append(m)
    return out


def response_format_schema(response_format: Mapping[str, Any] | None) -> tuple[str, bool]:
    """(JSON schema text, json_object) for an OpenAI ``response_format``."""
    if response_format is None:
        return "", False
    if not isinstance(response_format, Mapping):
        raise InvalidParameterError(
            'response_format must be a dict such as {"type": "json_object"}, '
            f"got {response_format!r}"
        )
    kind = response_format.get("type")
    if kind in (None, "text"):
        return "", False
    if kind == "json_object":
        schema = response_format.get("schema")
        return (_json(schema, "response_format.schema"), False) if schema else ("", True)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise InvalidParameterError("response_format json_schema needs json_schema.schema")
        return _json(spec["schema"], "response_format.json_schema.schema"), False
    raise InvalidParameterError(
        f"response_format type {kind!r} is not text, json_object or json_schema"
    )


def _tool_call(tc: _core.ChatToolCall) -> ToolCall:
    return {
        "id": tc.id,
        "type": "function",
        "function": {"name": tc.name, "arguments": tc.arguments},
    }


def chat_logprobs(entries: Sequence[_core.TokenLogprob]) -> ChatLogprobs:
    content: list[ChatTokenLogprob] = []
    for e in entries:
        content.append(
            {
                "token": e.text,
                "logprob": e.logprob,
                "bytes": list(e.text.encode()),
                "top_logprobs": [
                    {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode())}
                    for t in e.top
                ],
            }
        )
    return {"content": content}


class ChatResponseMeta:
    """What a chat response needs besides the native result."""

    def __init__(self, *, id: str, created: int, model: str, logprobs: bool) -> None:
        self.id = id
        self.created = created
        self.model = model
        self.logprobs = logprobs

    def response(self, result: _core.CompletionResult) -> ChatCompletionResponse:
        parsed = result.message
        assert parsed is not None, "a chat request's result carries its message"
        msg: ChatMessageOut = {"role": "assistant", "content": parsed.content or None}
        if parsed.tool_calls:
            msg["tool_calls"] = [_tool_call(tc) for tc in parsed.tool_calls]
        elif msg["content"] is None:
            msg["content"] = ""
        if parsed.reasoning_content:
            msg["reasoning_content"] = parsed.reasoning_content
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": msg,
                    "logprobs": chat_logprobs(result.logprobs) if self.logprobs else None,
                    "finish_reason": "tool_calls" if parsed.tool_calls else result.finish_reason,
                }
            ],
            "usage": usage_of(result),
            "timings": timings_of(result),
        }


class ChatCompletionStream(RequestStream[ChatCompletionChunk]):
    """Iterator of ``chat.completion.chunk`` deltas; closing it cancels the generation.

    The engine parses the reply as it grows and sends only what changed: content, reasoning and
    tool-call deltas (index, id, name, argument fragments) that reassemble to exactly the
    non-streaming message. It is also the handle of a request that does not stream
    (:meth:`response`, :meth:`aresponse`): that request wakes its waiter once, at the end.
    """

    def __init__(self, request: _core.Request, meta: ChatResponseMeta) -> None:
        super().__init__(request)
        self._meta = meta
        self._queue: list[ChatCompletionChunk] = [self._chunk({"role": "assistant", "content": ""})]
        self._done = False
        self._saw_tool_call = False

    def _chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: ChatLogprobs | None = None,
    ) -> ChatCompletionChunk:
        return {
            "id": self._meta.id,
            "object": "chat.completion.chunk",
            "created": self._meta.created,
            "model": self._meta.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            ],
        }

    def _feed(self, event: _core.StreamEvent | None) -> None:
        if event is None:
            result = self.result
            assert result is not None and result.message is not None
            finish = "tool_calls" if result.message.tool_calls else result.finish_reason
            last = self._chunk({}, finish)
            last["usage"] = usage_of(result)
            last["timings"] = timings_of(result)
            self._queue.append(last)
            self._done = True
            return
        logprobs = chat_logprobs(event.logprobs) if self._meta.logprobs and event.logprobs else None
        for d in event.deltas:
            delta: dict[str, Any] = {}
            if d.reasoning_content:
                delta["reasoning_content"] = d.reasoning_content
            if d.content:
                delta["content"] = d.content
            if d.tool_index >= 0:
                call: dict[str, Any] = {"index": d.tool_index}
                if d.tool_id:
                    call["id"] = d.tool_id
                    call["type"] = "function"
                function: dict[str, str] = {}
                if d.tool_name:
                    function["name"] = d.tool_name
                function["arguments"] = d.tool_arguments
                call["function"] = function
                delta["tool_calls"] = [call]
            if delta:
                self._queue.append(self._chunk(delta, logprobs=logprobs))
                logprobs = None
        if logprobs is not None:  # tokens that changed nothing visible yet
            self._queue.append(self._chunk({}, logprobs=logprobs))

    def __next__(self) -> ChatCompletionChunk:
        if self._finished:
            raise StopIteration
        while not self._queue and not self._done:
            self._feed(self._next_event())
        if not self._queue:
            self._finished = True
            raise StopIteration
        return self._queue.pop(0)

    async def __anext__(self) -> ChatCompletionChunk:
        if self._finished:
            raise StopAsyncIteration
        while not self._queue and not self._done:
            self._feed(await self._anext_event())
        if not self._queue:
            self._finished = True
            raise StopAsyncIteration
        return self._queue.pop(0)

    def response(self) -> ChatCompletionResponse:
        """Waits for the end and returns the whole response, as ``stream=False`` would have."""
        result = wait_result(self._request, self.deadline)
        self._finished = True
        return self._meta.response(result)

    async def aresponse(self) -> ChatCompletionResponse:
        """Awaits the end and returns the whole response, as ``stream=False`` would have."""
        result = await await_result(self._request, self.deadline)
        self._finished = True
        return self._meta.response(result)


def read_grammar(grammar: str | None, grammar_path: str | os.PathLike[str] | None) -> str | None:
    """The GBNF text of ``grammar`` or of the file at ``grammar_path``."""
    if grammar is not None and grammar_path is not None:
        raise InvalidParameterError("pass grammar or grammar_path, not both")
    if grammar_path is not None:
        try:
            with open(grammar_path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise InvalidParameterError(f"cannot read grammar_path {grammar_path!s}: {e}") from e
    if grammar is not None:
        text = getattr(
            grammar, "_grammar", grammar
        )  # llama-cpp-python's LlamaGrammar keeps it there
        if not isinstance(text, str):
            raise InvalidParameterError("grammar must be a GBNF string")
        return text
    return None


class ChatCompletionMixin:
    """``Llama.create_chat_completion`` and the chat template it renders with."""

    # provided by Llama
    model_path: str
    chat_format: str | None
    chat_template: str | None
    _chat_templates: _core.ChatTemplates | None = None
    _image_policy: ImagePolicy = ImagePolicy()
    sampling_params: Callable[..., _core.SamplingParams]

    def _require_engine(self) -> _core.Engine:
        raise NotImplementedError

    def _require_model(self) -> _core.Model:
        raise NotImplementedError

    @property
    def chat_templates(self) -> _core.ChatTemplates:
        """The chat template in use: ``chat_template``, else ``chat_format``, else the GGUF's
        own template, else ChatML for a model without one."""
        templates = self._chat_templates
        if templates is None:
            override = self.chat_template or self.chat_format or ""
            templates = _core.ChatTemplates(self._require_model(), override)
            self._chat_templates = templates
        return templates

    @with_sampling(defaults={"temperature": CHAT_TEMPERATURE})
    def create_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        functions: Sequence[Mapping[str, Any]] | None = None,
        function_call: Any = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        stream: bool = False,
        stop: str | Sequence[str] | None = None,
        response_format: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        model: str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        grammar: str | None = None,
        grammar_path: str | os.PathLike[str] | None = None,
        parallel_tool_calls: bool = True,
        reasoning_format: str = "auto",
        enable_thinking: bool = True,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        ignore_eos: bool = False,
        **sampling: Unpack[SamplingOptions],
    ) -> ChatCompletionResponse | ChatCompletionStream:
        """Generates the assistant's reply to OpenAI-shaped messages (``chat.completion``).

        The prompt is rendered with the model's own chat template. With ``tools``, the model
        decides whether to call one (``tool_choice="auto"``), must call one (``"required"``, or
        ``{"type": "function", "function": {"name": ...}}`` for a given one), or may not
        (``"none"``). Templates that know a tool-call format (Hermes, Llama 3.x, Qwen, Mistral,
        Functionary, ...) use it; any other model uses a generic JSON protocol. A called tool's
        arguments always validate against its parameter schema, and
        ``response_format={"type": "json_schema", ...}`` output always parses and validates:
        both are grammar-constrained.

        Args:
            messages: ``[{"role": "system" | "user" | "assistant" | "tool", "content": ...}]``;
                assistant messages may carry ``tool_calls``, tool messages ``tool_call_id``.
                With a vision projector (``mmproj_path``), a user message's content may be a
                list of parts holding ``{"type": "image_url", "image_url": {"url": ...}}``
                (a ``data:`` URL, a local file, or ``http(s)`` where allowed).
            functions: Legacy OpenAI functions (become tools).
            function_call: Legacy form of ``tool_choice``.
            tools: OpenAI tools ``[{"type": "function", "function": {"name", "description",
                "parameters"}}]``.
            tool_choice: "auto", "none", "required", or a named function.
            parallel_tool_calls: Allow several calls in one reply.
            response_format: ``{"type": "json_object"}`` or ``{"type": "json_schema",
                "json_schema": {"schema": {...}}}``.
            grammar: A GBNF grammar for the reply (not with tools or response_format).
            grammar_path: A .gbnf file with the grammar.
            reasoning_format: "auto" returns ``<think>`` content separately as
                ``reasoning_content``; "none" leaves it in the content.
            enable_thinking: Ask templates that support it to think (or not).
            chat_template_kwargs: Extra variables for the Jinja template.
            logprobs: Return the log-probability of each token.
            top_logprobs: How many alternatives to return per token (with ``logprobs``).
            stream: Return an iterator of ``chat.completion.chunk`` deltas.
            stop, max_tokens, ignore_eos, model: As in :meth:`create_completion`.
            **sampling: The sampling settings (listed below; :class:`SamplingOptions`);
                ``temperature`` defaults to 0.2 here, as in llama-cpp-python.

        Raises:
            InvalidParameterError: Malformed messages, an unknown role, a tool_choice naming a
                tool that was not given, conflicting options.
            GrammarError: A grammar or JSON schema that does not parse.
            ContextWindowExceededError: The messages do not fit in the context.
        """
        handle = self._start_chat(locals())
        return handle if stream else handle.response()

    def _start_chat(self, args: Mapping[str, Any]) -> ChatCompletionStream:
        """Submits a chat request (the arguments of :meth:`create_chat_completion`) in one
        native call and returns its handle."""
        engine = self._require_engine()
        if args["reasoning_format"] not in ("auto", "none", "deepseek"):
            raise InvalidParameterError(
                f"reasoning_format must be 'auto' or 'none', not {args['reasoning_format']!r}"
            )
        messages = args["messages"]
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise InvalidParameterError("messages must be a list of {'role': ..., 'content': ...}")
        messages, images = extract_images(pair_function_messages(messages), self._image_policy)
        tools = normalize_tools(args["tools"], args["functions"])
        names = [str((t.get("function") or {}).get("name", "")) for t in tools]
        choice = normalize_tool_choice(args["tool_choice"], args["function_call"], names)
        schema, json_object = response_format_schema(args["response_format"])
        template_kwargs = {
            k: _json(v, f"chat_template_kwargs[{k!r}]")
            for k, v in (args["chat_template_kwargs"] or {}).items()
        }
        n_logprobs = -1
        if args["logprobs"]:
            top = args["top_logprobs"]
            n_logprobs = 0 if top is None else check_int(top, "top_logprobs", 0)
        stream = bool(args["stream"])
        request = engine.submit_chat(
            self.chat_templates,
            _json(list(messages), "messages"),
            self.sampling_params(**{"temperature": CHAT_TEMPERATURE, **sampling_values(args)}),
            tools_json=_json(tools, "tools") if tools else "",
            tool_choice=choice,
            parallel_tool_calls=bool(args["parallel_tool_calls"]),
            json_schema=schema,
            json_object=json_object,
            grammar=read_grammar(args["grammar"], args["grammar_path"]) or "",
            enable_thinking=bool(args["enable_thinking"]),
            parse_reasoning=args["reasoning_format"] != "none",
            template_kwargs=template_kwargs,
            max_tokens=max_tokens_limit(args["max_tokens"]),
            stop=stop_list(args["stop"]),
            logprobs=n_logprobs,
            stream=stream,
            ignore_eos=bool(args["ignore_eos"]),
            images=images,
        )
        meta = ChatResponseMeta(
            id=f"chatcmpl-{uuid.uuid4()}",
            created=int(time.time()),
            model=args["model"] or self.model_path,
            logprobs=bool(args["logprobs"]),
        )
        return ChatCompletionStream(request, meta)

    def count_chat_tokens(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Prompt tokens these messages (and tools) take once rendered by the chat template,
        each image's tokens included."""
        tools_json = _json(list(tools), "tools") if tools else ""
        messages, images = extract_images(pair_function_messages(messages), self._image_policy)
        messages_json = _json(list(messages), "messages")
        if images:
            engine = self._require_engine()
            tokens = engine.chat_tokens(
                self.chat_templates, messages_json, tools_json=tools_json, images=images
            )
            return len(tokens)
        return len(self.chat_templates.apply(messages_json, tools_json=tools_json).tokens)

    def submit_chat_completion(
        self, messages: Sequence[Mapping[str, Any]], *, stream: bool = False, **kwargs: Any
    ) -> ChatCompletionStream:
        """Queues a chat request and returns its handle at once, with the arguments of
        :meth:`create_chat_completion`. Iterate it (``stream=True``), or call ``response()`` or
        ``await aresponse()``: a request that does not stream wakes its waiter only once, when
        it ends. Closing the handle cancels the request."""
        return self._start_chat(
            bind_call(self.create_chat_completion, messages, stream=stream, **kwargs)
        )

    async def acreate_chat_completion(
        self, messages: Sequence[Mapping[str, Any]], *, stream: bool = False, **kwargs: Any
    ) -> ChatCompletionResponse | ChatCompletionStream:
        """:meth:`create_chat_completion` for asyncio: the same keyword arguments, and it never
        blocks the event loop. With ``stream=True`` it returns the stream, to be consumed with
        ``async for``. Cancelling the awaiting task cancels the generation."""
        handle = await self.asubmit_chat_completion(messages, stream=stream, **kwargs)
        return handle if stream else await handle.aresponse()

    async def asubmit_chat_completion(
        self, messages: Sequence[Mapping[str, Any]], *, stream: bool = False, **kwargs: Any
    ) -> ChatCompletionStream:
        """:meth:`submit_chat_completion` for asyncio. Images are decoded, checked and
        preprocessed (and fetched, where allowed) before the request is queued, which takes
        milliseconds to seconds: a request with images is submitted from a worker thread, so
        the event loop never waits for them."""
        if renders_in_thread(messages, kwargs.get("tools") or kwargs.get("functions")):
            return await asyncio.to_thread(
                self.submit_chat_completion, messages, stream=stream, **kwargs
            )
        return self.submit_chat_completion(messages, stream=stream, **kwargs)
