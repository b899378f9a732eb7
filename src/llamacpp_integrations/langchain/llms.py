"""``LlamaCpp``: a LangChain text-completion LLM on our in-process llama.cpp engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict

from .._completion import CompletionStream
from ..types import CompletionChunk, CompletionResponse
from ._common import LlamaCppFields, deadline_of

__all__ = ["LlamaCpp"]


class LlamaCpp(LlamaCppFields, LLM):
    """A LangChain LLM (text in, text out) running a GGUF model in-process on llama.cpp.

    A drop-in replacement for ``langchain_community.llms.LlamaCpp`` (same constructor fields;
    an unknown field raises) with per-call ``stop``, token usage in ``llm_output``, native
    async, and clean exceptions.

    Setup:
        .. code-block:: bash

            pip install "llamacpp-integrations[langchain]"

    Instantiate:
        .. code-block:: python

            from llamacpp_integrations.langchain import LlamaCpp

            llm = LlamaCpp(model_path="model.gguf", temperature=0, max_tokens=64)

    Invoke:
        .. code-block:: python

            llm.invoke("The capital of France is", stop=["\n"])
            (PromptTemplate.from_template("Q: {q}\nA:") | llm).invoke({"q": "..."})

    Stream:
        .. code-block:: python

            for text in llm.stream("Once upon a time"):
                print(text, end="")
            LlamaCpp(..., streaming=True, callbacks=[StreamingStdOutCallbackHandler()])

    Async:
        .. code-block:: python

            await llm.ainvoke("Hello")
            await llm.abatch(["One,", "Two,"])

    Constrained output:
        .. code-block:: python

            LlamaCpp(model_path=..., grammar_path="json.gbnf").invoke("A person as JSON:")

    Token usage:
        .. code-block:: python

            llm.generate(["Hello"]).llm_output["token_usage"]
            # {'prompt_tokens': 2, 'completion_tokens': 16, 'total_tokens': 18}
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    suffix: str | None = None
    """Text after the gap, for fill-in-the-middle models (raises on models without FIM)."""
    echo: bool = False
    """Put the prompt in front of the generated text."""
    logprobs: int | None = None
    """Return the log-probabilities of each token and of this many alternatives, in
    ``generation_info["logprobs"]``."""

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.ls_params("llm", stop, kwargs)

    def _start(
        self, prompt: str, stop: list[str] | None, kwargs: Mapping[str, Any], *, stream: bool
    ) -> CompletionStream:
        call = self.sampling_call_kwargs(stop, kwargs)
        call.setdefault("suffix", self.suffix)
        call.setdefault("echo", self.echo)
        call.setdefault("logprobs", self.logprobs)
        call.setdefault("model", self.reported_name())
        handle = self.llama.submit_completion(prompt, stream=stream, **call)
        handle.deadline = deadline_of(self.timeout)
        return handle

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
            llm_output={"token_usage": usage, "model_name": self.reported_name()},
        )

    def _streamed_result(self, streams: list[list[GenerationChunk]]) -> LLMResult:
        """The result of prompts generated through the streaming path (usage from the last
        chunk of each)."""
        generations, usage = [], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for chunks in streams:
            info = dict(chunks[-1].generation_info or {}) if chunks else {}
            for key, value in info.pop("usage", {}).items():
                if key in usage:
                    usage[key] += int(value)
            generations.append(
                [Generation(text="".join(c.text for c in chunks), generation_info=info)]
            )
        return LLMResult(
            generations=generations,
            llm_output={"token_usage": usage, "model_name": self.reported_name()},
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
            return self._streamed_result(
                [list(self._stream(p, stop, run_manager, **kwargs)) for p in prompts]
            )
        # queue every prompt before waiting, so the engine can work on them back to back
        streams = [self._start(p, stop, kwargs, stream=False) for p in prompts]
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
            streamed = []
            for prompt in prompts:
                streamed.append(
                    [c async for c in self._astream(prompt, stop, run_manager, **kwargs)]
                )
            return self._streamed_result(streamed)
        streams = [self._start(p, stop, kwargs, stream=False) for p in prompts]
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
        with self._start(prompt, stop, kwargs, stream=True) as stream:
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
        async with self._start(prompt, stop, kwargs, stream=True) as stream:
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
