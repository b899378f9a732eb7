"""``LlamaCpp``: a LangChain text-completion LLM on our in-process llama.cpp engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, Field, model_validator

from .._completion import CompletionStream
from ..types import CompletionChunk, CompletionResponse
from ._common import LlamaLoadFields, SamplingFields, deadline_of

__all__ = ["LlamaCpp"]


class LlamaCpp(LlamaLoadFields, SamplingFields, LLM):
    """A LangChain LLM (text in, text out) running a GGUF model in-process on llama.cpp.

    A drop-in replacement for ``langchain_community.llms.LlamaCpp`` (same constructor fields)
    with per-call ``stop``, token usage in ``llm_output``, native async, and clean exceptions.

    Example:
        .. code-block:: python

            from llamacpp_integrations.langchain import LlamaCpp

            llm = LlamaCpp(model_path="model.gguf", temperature=0, max_tokens=64)
            llm.invoke("Q: What is the capital of France? A:", stop=["\\n"])
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    suffix: str | None = None
    """Text after the gap, for fill-in-the-middle models (raises on models without FIM)."""
    echo: bool = False
    """Put the prompt in front of the generated text."""
    logprobs: int | None = None
    """Return the log-probabilities of each token and of this many alternatives, in
    ``generation_info["logprobs"]``."""
    model_name: str | None = None
    """The name reported in ``llm_output`` and traces (default: the GGUF file name)."""
    callback_manager: BaseCallbackManager | None = Field(default=None, exclude=True)
    """Deprecated spelling of ``callbacks``, accepted for compatibility."""

    @model_validator(mode="before")
    @classmethod
    def _callback_manager_alias(cls, values: Any) -> Any:
        if (
            isinstance(values, dict)
            and values.get("callback_manager") is not None
            and values.get("callbacks") is None
        ):
            values = {**values, "callbacks": values["callback_manager"]}
        return values

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_path": self.llama.model_path,
            "n_ctx": self.llama.n_ctx(),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params: LangSmithParams = {
            "ls_provider": "llamacpp",
            "ls_model_name": kwargs.get("model") or self._name(),
            "ls_model_type": "llm",
            "ls_temperature": kwargs.get("temperature", self.temperature),
        }
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens:
            params["ls_max_tokens"] = max_tokens
        stops = stop or kwargs.get("stop") or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def _name(self) -> str:
        return self.model_name or self.resolved_model_name

    def _start(
        self, prompt: str, stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> CompletionStream:
        call = self.sampling_call_kwargs(stop, kwargs)
        call.setdefault("suffix", self.suffix)
        call.setdefault("echo", self.echo)
        call.setdefault("logprobs", self.logprobs)
        call.setdefault("model", self._name())
        stream = self.llama.create_completion(prompt, stream=True, **call)
        assert isinstance(stream, CompletionStream)
        stream.deadline = deadline_of(self.timeout)
        return stream

    @staticmethod
    def _generation(response: CompletionResponse) -> Generation:
        choice = response["choices"][0]
        info: dict[str, Any] = {"finish_reason": choice["finish_reason"]}
        if choice["logprobs"] is not None:
            info["logprobs"] = choice["logprobs"]
        return Generation(text=choice["text"], generation_info=info)

    def _llm_result(self, responses: list[CompletionResponse]) -> LLMResult:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for r in responses:
            for key in usage:
                usage[key] += int(r["usage"][key])  # type: ignore[literal-required]
        return LLMResult(
            generations=[[self._generation(r)] for r in responses],
            llm_output={"token_usage": usage, "model_name": self._name()},
        )

    @staticmethod
    def _chunk(raw: CompletionChunk) -> GenerationChunk:
        choice = raw["choices"][0]
        info: dict[str, Any] = {}
        if choice["logprobs"] is not None:
            info["logprobs"] = choice["logprobs"]
        if choice["finish_reason"] is not None:
            info["finish_reason"] = choice["finish_reason"]
            if "usage" in raw:
                info["usage"] = raw["usage"]
        return GenerationChunk(text=choice["text"], generation_info=info or None)

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        if self.streaming:
            texts = []
            for prompt in prompts:
                chunks = list(self._stream(prompt, stop, run_manager, **kwargs))
                texts.append(
                    Generation(
                        text="".join(c.text for c in chunks),
                        generation_info=chunks[-1].generation_info if chunks else None,
                    )
                )
            return LLMResult(
                generations=[[g] for g in texts], llm_output={"model_name": self._name()}
            )
        # queue every prompt before waiting, so the engine can work on them back to back
        streams = [self._start(p, stop, kwargs) for p in prompts]
        try:
            return self._llm_result([s.response() for s in streams])
        finally:
            for s in streams:
                s.close()

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        if self.streaming:
            texts = []
            for prompt in prompts:
                chunks = [c async for c in self._astream(prompt, stop, run_manager, **kwargs)]
                texts.append(
                    Generation(
                        text="".join(c.text for c in chunks),
                        generation_info=chunks[-1].generation_info if chunks else None,
                    )
                )
            return LLMResult(
                generations=[[g] for g in texts], llm_output={"model_name": self._name()}
            )
        streams = [self._start(p, stop, kwargs) for p in prompts]
        try:
            return self._llm_result([await s.aresponse() for s in streams])
        finally:
            for s in streams:
                s.close()

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self._generate([prompt], stop, run_manager, **kwargs).generations[0][0].text

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        result = await self._agenerate([prompt], stop, run_manager, **kwargs)
        return result.generations[0][0].text

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        with self._start(prompt, stop, kwargs) as stream:
            for raw in stream:
                chunk = self._chunk(raw)
                if run_manager:
                    logprobs = (chunk.generation_info or {}).get("logprobs")
                    run_manager.on_llm_new_token(
                        chunk.text, chunk=chunk, verbose=self.verbose, logprobs=logprobs
                    )
                yield chunk

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async with self._start(prompt, stop, kwargs) as stream:
            async for raw in stream:
                chunk = self._chunk(raw)
                if run_manager:
                    logprobs = (chunk.generation_info or {}).get("logprobs")
                    await run_manager.on_llm_new_token(
                        chunk.text, chunk=chunk, verbose=self.verbose, logprobs=logprobs
                    )
                yield chunk

    def get_num_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as a prompt, by the model's own tokenizer (BOS included)."""
        return len(self.llama.tokenize(text))

    def get_token_ids(self, text: str) -> list[int]:
        """The model's token ids of ``text`` as a prompt."""
        return self.llama.tokenize(text)
