"""``ChatLlamaCpp``: a LangChain chat model on our in-process llama.cpp engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict

from .._chat import ChatCompletionStream, normalize_tool_choice, normalize_tools
from .._openai import json_schema_format
from ..types import ChatCompletionChunk, ChatCompletionResponse
from ._common import PROVIDER, LlamaCppFields, deadline_of
from ._messages import ai_message, ai_message_chunk, to_openai_messages, usage_metadata

__all__ = ["ChatLlamaCpp"]


class ChatLlamaCpp(LlamaCppFields, BaseChatModel):
    """A LangChain chat model running a GGUF model in-process on llama.cpp.

    A drop-in replacement for ``langchain_community.chat_models.ChatLlamaCpp`` (same
    constructor fields; an unknown field raises) that renders prompts with the model's own chat
    template, lets the model decide whether to call a tool, always produces parseable structured
    output (grammar-constrained), reports token usage, and has native async.

    Setup:
        .. code-block:: bash

            pip install "llamacpp-integrations[langchain]"

    Instantiate:
        .. code-block:: python

            from llamacpp_integrations.langchain import ChatLlamaCpp

            llm = ChatLlamaCpp(model_path="model.gguf", n_ctx=4096, temperature=0, max_tokens=256)
            # or share a loaded Llama: ChatLlamaCpp(client=Llama(...))

    Invoke:
        .. code-block:: python

            llm.invoke([("system", "Answer briefly."), ("human", "Name three colours.")])
            llm.invoke("Count to ten.", stop=["5"], temperature=0.7)  # per-call overrides

    Stream:
        .. code-block:: python

            for chunk in llm.stream("Tell me a story."):
                print(chunk.content, end="")
            # streaming=True (or a streaming callback) calls on_llm_new_token per token

    Async:
        .. code-block:: python

            await llm.ainvoke("Hello")  # never blocks the event loop
            async for chunk in llm.astream("Hello"): ...
            await llm.abatch(["Hi", "Bye"])

    Tool calling:
        .. code-block:: python

            with_tools = llm.bind_tools([get_weather, add])  # the model decides
            msg = with_tools.invoke("What is the weather in Paris?")
            msg.tool_calls  # [{'name': 'get_weather', 'args': {'city': 'Paris'}, 'id': ...}]
            llm.bind_tools([add], tool_choice="add")  # or "any", "none", the OpenAI dict

    Structured output:
        .. code-block:: python

            llm.with_structured_output(Person).invoke("Alice is 30.")  # Person(name=..., age=30)
            llm.with_structured_output(Person, method="function_calling", include_raw=True)

    Token usage:
        .. code-block:: python

            llm.invoke("Hello").usage_metadata
            # {'input_tokens': 31, 'output_tokens': 9, 'total_tokens': 40,
            #  'input_token_details': {'cache_read': 24}}

    Response metadata:
        ``model_name``, ``finish_reason``, llama-server style ``timings``, and ``logprobs`` with
        ``logprobs=True`` (and ``top_logprobs=n``).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    logprobs: bool | int | None = None
    """Return token log-probabilities in ``response_metadata["logprobs"]``; an int also asks
    for that many alternatives per token (as ``top_logprobs``)."""
    top_logprobs: int | None = None
    """Alternatives per token with ``logprobs``."""
    # ------------------------------------------------------------------ LangChain plumbing

    def _resolve_model_profile(self) -> ModelProfile | None:
        client = self.client
        vision = (
            client.supports_vision
            if client is not None
            else self.load_value("mmproj_path") is not None
        )
        urls = client is not None and client._image_policy.remote
        return ModelProfile(
            open_weights=True,
            max_input_tokens=client.n_ctx() if client is not None else self.load_value("n_ctx"),
            text_inputs=True,
            image_inputs=vision,
            image_url_inputs=vision and urls,
            pdf_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            text_outputs=True,
            tool_calling=True,
            tool_choice=True,
            structured_output=True,
        )

    @property
    def _llm_type(self) -> str:
        return "llamacpp-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params("chat", stop, kwargs)

    def _call_kwargs(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        kwargs.pop("stream", None)  # LangChain's own flag; we choose the path ourselves
        out = self.sampling_call_kwargs(stop, kwargs)
        if self.logprobs and "logprobs" not in kwargs:
            out["logprobs"] = True
            top = self.top_logprobs
            if top is None and not isinstance(self.logprobs, bool):
                top = int(self.logprobs)
            if top is not None:
                out["top_logprobs"] = top
        out.setdefault("model", self.reported_name())
        return out

    def _request(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return to_openai_messages(messages), self._call_kwargs(stop, kwargs)

    def _timed(self, handle: ChatCompletionStream) -> ChatCompletionStream:
        handle.deadline = deadline_of(self.timeout)
        return handle

    def _start(self, *request: Any, stream: bool) -> ChatCompletionStream:
        """Submits (messages, stop, kwargs) as one chat request and returns its handle."""
        messages, kw = self._request(*request)
        return self._timed(self.llama.submit_chat_completion(messages, stream=stream, **kw))

    async def _astart(self, *request: Any, stream: bool) -> ChatCompletionStream:
        """:meth:`_start` for asyncio: a request with images is submitted from a worker thread,
        so the event loop never waits on them."""
        messages, kw = self._request(*request)
        return self._timed(await self.llama.asubmit_chat_completion(messages, stream=stream, **kw))

    def _result(self, response: ChatCompletionResponse) -> ChatResult:
        choice = response["choices"][0]
        metadata: dict[str, Any] = {
            "model_name": response["model"],
            "model_provider": PROVIDER,
            "finish_reason": choice["finish_reason"],
            "timings": response["timings"],
        }
        if choice["logprobs"] is not None:
            metadata["logprobs"] = choice["logprobs"]
        message = ai_message(dict(choice["message"]), usage_metadata(response), metadata)
        info: dict[str, Any] = {"finish_reason": choice["finish_reason"]}
        if choice["logprobs"] is not None:
            info["logprobs"] = choice["logprobs"]
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=info)],
            llm_output={"token_usage": response["usage"], "model_name": response["model"]},
        )

    def _chunk(self, chunk: ChatCompletionChunk) -> ChatGenerationChunk:
        choice = chunk["choices"][0]
        message = ai_message_chunk(choice["delta"])
        info: dict[str, Any] | None = None
        if choice["logprobs"] is not None:
            info = {"logprobs": choice["logprobs"]}
        if choice["finish_reason"] is not None:
            message.chunk_position = "last"
            message.response_metadata = {
                "model_name": chunk["model"],
                "model_provider": PROVIDER,
                "finish_reason": choice["finish_reason"],
                "timings": chunk.get("timings"),
            }
            if "usage" in chunk:
                message.usage_metadata = usage_metadata(chunk)
            info = {**(info or {}), "finish_reason": choice["finish_reason"]}
        elif "model_provider" not in message.response_metadata:
            message.response_metadata = {"model_provider": PROVIDER}
        return ChatGenerationChunk(message=message, generation_info=info)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(self._start(messages, stop, kwargs, stream=False).response())

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        handle = await self._astart(messages, stop, kwargs, stream=False)
        return self._result(await handle.aresponse())

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        with self._start(messages, stop, kwargs, stream=True) as stream:
            for raw in stream:
                chunk = self._chunk(raw)
                if run_manager:
                    logprobs = (chunk.generation_info or {}).get("logprobs")
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk, logprobs=logprobs)
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async with await self._astart(messages, stop, kwargs, stream=True) as stream:
            async for raw in stream:
                chunk = self._chunk(raw)
                if run_manager:
                    logprobs = (chunk.generation_info or {}).get("logprobs")
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk, logprobs=logprobs)
                yield chunk

    # ------------------------------------------------------------------ tokens

    def get_num_tokens(self, text: str) -> int:
        """Tokens in ``text`` by the model's own tokenizer."""
        return len(self.llama.tokenize(text, add_bos=False))

    def get_token_ids(self, text: str) -> list[int]:
        """The model's token ids of ``text``."""
        return self.llama.tokenize(text, add_bos=False)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Prompt tokens these messages (and tools) take once rendered by the chat template."""
        return self.llama.count_chat_tokens(
            to_openai_messages(messages),
            tools=normalize_tools([convert_to_openai_tool(t) for t in tools or []], None),
        )

    # ------------------------------------------------------------------ tools

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Binds tools the model may call; ``AIMessage.tool_calls`` carries its calls.

        Args:
            tools: Pydantic classes, TypedDicts, JSON-schema or OpenAI tool dicts, LangChain
                tools, or functions.
            tool_choice: None or "auto": the model decides; "any" or "required": it must call
                one; a tool name, ``{"type": "function", "function": {"name": ...}}``, or True
                with a single tool: that tool; "none": no tool.
            parallel_tool_calls: False allows at most one call per reply.
            strict: Accepted for compatibility: arguments always follow the schema here (the
                output is grammar-constrained).
            **kwargs: Further call arguments to bind.

        Raises:
            InvalidParameterError: ``tool_choice`` names a tool not in ``tools``, or is True
                with several tools (a ``ValueError``).
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        if tool_choice is not None:
            kwargs["tool_choice"] = normalize_tool_choice(tool_choice, None, names)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Output parsed into ``schema``; with the default method it always validates.

        Args:
            schema: A Pydantic class (the result is an instance), or a TypedDict, JSON schema
                or OpenAI tool dict (the result is a dict).
            method: "json_schema" (default): the reply is constrained by a grammar built from
                the schema. "function_calling": the model is made to call a tool with the
                schema as its arguments (also grammar-constrained). "json_mode": accepted
                for compatibility, and grammar-constrained by the schema like "json_schema"
                (a hosted JSON mode only promises some JSON object).
            include_raw: Return ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``
                instead of raising on a parsing error.
            strict: Accepted for compatibility; json_schema and function_calling are always
                strict here.
            **kwargs: Must be empty.

        Raises:
            ValueError: An unknown method or keyword argument.
        """
        if kwargs:
            raise ValueError(f"unexpected arguments: {sorted(kwargs)}")
        pydantic_schema = isinstance(schema, type) and is_basemodel_subclass(schema)
        tool = convert_to_openai_tool(schema)
        name = tool["function"]["name"]
        trace = {"kwargs": {"method": method, "strict": strict}, "schema": tool}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            llm = self.bind_tools(
                [schema],
                tool_choice=name,
                parallel_tool_calls=False,
                ls_structured_output_format=trace,
            )
            if pydantic_schema:
                parser = PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            else:
                parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        elif method in ("json_schema", "json_mode"):
            # json_mode, too, follows the schema: a hosted JSON mode only promises some JSON
            # object, but a local grammar for the exact schema costs nothing and always parses
            llm = self.bind(
                response_format=json_schema_format(name, convert_to_json_schema(schema)),
                ls_structured_output_format=trace,
            )
            if pydantic_schema:
                parser = PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
            else:
                parser = JsonOutputParser()
        else:
            raise ValueError(
                f"method must be 'json_schema', 'function_calling' or 'json_mode', not {method!r}"
            )
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks(
            [no_parse], exception_key="parsing_error"
        )
