"""Structured output for ``LlamaCPP``: replies generated under the JSON-schema grammar of the
output class, so they always validate (unless cut off at the token limit, which says so)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Mapping
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.bridge.pydantic import BaseModel
from llama_index.core.instrumentation.events.llm import (
    LLMStructuredPredictEndEvent,
    LLMStructuredPredictInProgressEvent,
    LLMStructuredPredictStartEvent,
)
from llama_index.core.prompts import PromptTemplate
from llama_index.core.types import Model, PydanticProgramMode

from .._openai import json_schema_format
from ._instrument import dispatcher, span

if TYPE_CHECKING:
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.program.utils import FlexibleModel

    _Base = FunctionCallingLLM
else:
    _Base = object

__all__ = ["StructuredOutputMixin"]


class StructuredOutputMixin(_Base):
    """``structured_predict`` and its async and streaming forms through the JSON-schema grammar
    (``pydantic_program_mode`` DEFAULT); other modes fall back to LlamaIndex's programs."""

    def _structured_request(
        self,
        output_cls: type[BaseModel],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None,
        prompt_args: dict[str, Any],
    ) -> tuple[list[ChatMessage], dict[str, Any]]:
        messages = self._extend_messages(prompt.format_messages(llm=self, **prompt_args))
        kwargs = dict(llm_kwargs or {})
        for key in ("tools", "tool_choice", "tool_required", "allow_parallel_tool_calls"):
            kwargs.pop(key, None)
        kwargs["response_format"] = json_schema_format(
            output_cls.__name__, output_cls.model_json_schema()
        )
        return messages, kwargs

    @span
    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """A ``output_cls`` instance from the model, generated under its JSON-schema grammar.

        With ``pydantic_program_mode`` other than ``DEFAULT``, LlamaIndex's program for that
        mode is used instead.

        Args:
            output_cls: The Pydantic class to produce.
            prompt: The prompt template.
            llm_kwargs: Generation arguments for the call.
            **prompt_args: Variables of the template.

        Returns:
            The validated instance.
        """
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            fallback: Model = super().structured_predict(
                output_cls, prompt, llm_kwargs, **prompt_args
            )
            return fallback
        dispatcher.event(
            LLMStructuredPredictStartEvent(
                output_cls=output_cls, template=prompt, template_args=prompt_args
            )
        )
        messages, kwargs = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args)
        response = self.chat(messages, **kwargs)
        result: Model = parse_structured(output_cls, response.message.content, response.raw)
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    @span
    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """:meth:`structured_predict` without blocking the event loop.

        Args:
            output_cls: The Pydantic class to produce.
            prompt: The prompt template.
            llm_kwargs: Generation arguments for the call.
            **prompt_args: Variables of the template.

        Returns:
            The validated instance.
        """
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            afallback: Model = await super().astructured_predict(
                output_cls, prompt, llm_kwargs, **prompt_args
            )
            return afallback
        dispatcher.event(
            LLMStructuredPredictStartEvent(
                output_cls=output_cls, template=prompt, template_args=prompt_args
            )
        )
        messages, kwargs = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args)
        response = await self.achat(messages, **kwargs)
        result: Model = parse_structured(output_cls, response.message.content, response.raw)
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    @span
    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Model | FlexibleModel, None, None]:
        """Streams partial ``output_cls`` objects as the JSON arrives; the last one validates.

        Args:
            output_cls: The Pydantic class to produce.
            prompt: The prompt template.
            llm_kwargs: Generation arguments for the call.
            **prompt_args: Variables of the template.

        Returns:
            A generator of partial objects (fields fill in as they arrive).
        """
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            return super().stream_structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
        messages, kwargs = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args)

        def gen() -> Generator[Model | FlexibleModel, None, None]:
            dispatcher.event(
                LLMStructuredPredictStartEvent(
                    output_cls=output_cls, template=prompt, template_args=prompt_args
                )
            )
            partial = PartialObjects(output_cls)
            for response in self.stream_chat(messages, **kwargs):
                obj = partial.update(response)
                if obj is not None:
                    dispatcher.event(LLMStructuredPredictInProgressEvent(output=obj))
                    yield obj
            final = partial.final()
            yield final
            dispatcher.event(LLMStructuredPredictEndEvent(output=final))

        return gen()

    @span
    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Model | FlexibleModel, None]:
        """:meth:`stream_structured_predict` for asyncio.

        Args:
            output_cls: The Pydantic class to produce.
            prompt: The prompt template.
            llm_kwargs: Generation arguments for the call.
            **prompt_args: Variables of the template.

        Returns:
            An async generator of partial objects; the last one validates.
        """
        if self.pydantic_program_mode != PydanticProgramMode.DEFAULT:
            return await super().astream_structured_predict(
                output_cls, prompt, llm_kwargs, **prompt_args
            )
        messages, kwargs = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args)

        async def gen() -> AsyncGenerator[Model | FlexibleModel, None]:
            dispatcher.event(
                LLMStructuredPredictStartEvent(
                    output_cls=output_cls, template=prompt, template_args=prompt_args
                )
            )
            partial = PartialObjects(output_cls)
            async for response in await self.astream_chat(messages, **kwargs):
                obj = partial.update(response)
                if obj is not None:
                    dispatcher.event(LLMStructuredPredictInProgressEvent(output=obj))
                    yield obj
            final = partial.final()
            yield final
            dispatcher.event(LLMStructuredPredictEndEvent(output=final))

        return gen()


def parse_structured(output_cls: type[Model], text: str | None, raw: Any) -> Model:
    """The object in a JSON-schema-constrained reply; a clear error when it was cut short."""
    try:
        return output_cls.model_validate_json(text or "")
    except ValueError as e:  # pydantic's ValidationError included
        finish = None
        if isinstance(raw, Mapping) and raw.get("choices"):
            finish = raw["choices"][0].get("finish_reason")
        if finish != "length":
            raise
        raise ValueError(
            f"the {output_cls.__name__} object was cut off at the token limit before its JSON "
            "was complete; raise max_new_tokens (or pass llm_kwargs={'max_tokens': ...}), or "
            "bound the schema's lists and strings (max_length)"
        ) from e


class PartialObjects:
    """Partial objects of a streamed JSON reply, through LlamaIndex's own partial parsing."""

    def __init__(self, output_cls: type[Any]) -> None:
        self.output_cls = output_cls
        self.current: Any = None
        self.text = ""
        self.raw: Any = None

    def update(self, response: ChatResponse) -> Any:
        from llama_index.core.program.utils import process_streaming_objects

        self.text = response.message.content or ""
        self.raw = response.raw
        if not response.delta:
            return None
        self.current = process_streaming_objects(
            response,
            self.output_cls,
            cur_objects=[self.current] if self.current is not None else None,
            flexible_mode=True,
        )
        return self.current

    def final(self) -> Any:
        return parse_structured(self.output_cls, self.text, self.raw)
