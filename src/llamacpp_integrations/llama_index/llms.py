"""``LlamaCPP``: a LlamaIndex ``FunctionCallingLLM`` running a GGUF model in-process."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.constants import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_NUM_OUTPUTS,
    DEFAULT_TEMPERATURE,
)

# re-exported by llama_index.core.instrumentation without an __all__ entry
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.types import BaseOutputParser, PydanticProgramMode

from .._loading import check_load
from .._params import load_model
from .._shared import shared_llama
from ..errors import InvalidParameterError
from ..llama import Llama
from ..models import default_model_path
from ._client import ClientMixin
from ._instrument import chat_callback, completion_callback
from ._messages import (
    chat_response,
    completion_response,
    to_openai_messages,
)
from ._streams import (
    achat_from_completion_stream,
    achat_stream,
    acompletion_stream,
    chat_from_completion_stream,
    chat_stream,
    completion_stream,
    text_as_chat,
)
from ._structured import StructuredOutputMixin
from ._tools import ToolCallingMixin
from .download import download_model

if TYPE_CHECKING:
    pass

__all__ = ["LlamaCPP"]

_TEMPLATE_ONLY = ("tools", "functions", "response_format")
"""Arguments only the model's chat template can express (a custom formatter cannot)."""


def _check_generate_kwargs(kwargs: Mapping[str, Any]) -> None:
    """``generate_kwargs`` must be arguments of ``Llama``'s completion or chat completion (the
    sampling settings among them come from ``SamplingOptions``), so that a typo fails at
    construction instead of at the first call."""
    known = {"max_new_tokens"}
    for method in (Llama.create_completion, Llama.create_chat_completion):
        known.update(inspect.signature(method).parameters)
    known -= {"self", "prompt", "messages", "stream"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise InvalidParameterError(
            f"generate_kwargs has unknown argument(s) {unknown}; expected some of {sorted(known)}"
        )


class LlamaCPP(ClientMixin, ToolCallingMixin, StructuredOutputMixin, FunctionCallingLLM):
    """A GGUF model running in-process on llama.cpp, as a LlamaIndex function-calling LLM.

    A drop-in replacement for ``llama_index.llms.llama_cpp.LlamaCPP``: the same fields, but
    chat uses the model's own chat template (no hand-written ``[INST]`` formatters), tools and
    structured output are grammar-constrained so they always parse, async methods never block
    the event loop, and per-call arguments are honoured.

    Setup:
        .. code-block:: bash

            pip install "llamacpp-integrations[llama-index]"

    Instantiate:
        .. code-block:: python

            from llamacpp_integrations.llama_index import LlamaCPP

            llm = LlamaCPP(model_path="model.gguf", temperature=0.1, max_new_tokens=256)
            llm = LlamaCPP()  # the default model (SmolLM2-135M-Instruct)
            llm = LlamaCPP(model_url="https://example.org/model.gguf", model_sha256="...")

    Invoke:
        .. code-block:: python

            llm.complete("Name a colour.").text
            llm.chat([ChatMessage(role="user", content="Hi")]).message.content
            llm.complete("Count to 3", stop=["3"], temperature=0.0, max_tokens=16)

    Stream:
        .. code-block:: python

            for r in llm.stream_complete("Tell me a story"):
                print(r.delta, end="")

    Async:
        .. code-block:: python

            await llm.acomplete("Hi")
            async for r in await llm.astream_chat(messages):
                print(r.delta, end="")

    Tool calling:
        .. code-block:: python

            from llama_index.core.agent.workflow import FunctionAgent

            agent = FunctionAgent(tools=[add_tool], llm=llm)
            response = llm.chat_with_tools([add_tool], user_msg="What is 2 plus 3?")
            llm.get_tool_calls_from_response(response)

    Structured output:
        .. code-block:: python

            llm.structured_predict(Person, PromptTemplate("Describe {name}"), name="Ada")
            llm.as_structured_llm(Person).complete("Describe Ada")

    Token usage:
        ``response.additional_kwargs`` holds ``prompt_tokens``, ``completion_tokens`` and
        ``total_tokens``; ``response.raw`` is the engine's OpenAI-shaped response.

    Real token counts for LlamaIndex's prompt budgets:
        .. code-block:: python

            from llama_index.core import Settings
            Settings.tokenizer = llm.tokenizer
    """

    model_url: str | None = Field(
        default=None, description="URL of a GGUF file to download (once) when no model_path."
    )
    """URL of a GGUF file, downloaded once into the cache when ``model_path`` is not given."""
    model_path: str | None = Field(
        default=None, description="Path to a GGUF file; the default model when None."
    )
    """Path to a GGUF file. With neither a path nor a URL, the default model is used."""
    model_sha256: str | None = Field(
        default=None, description="Expected SHA-256 of the file at model_url."
    )
    """Expected SHA-256 (hex) of the file at ``model_url``; a mismatch raises."""
    temperature: float = Field(
        default=DEFAULT_TEMPERATURE, ge=0.0, description="Sampling temperature (0 is greedy)."
    )
    """Sampling temperature; 0 is greedy. A call's ``temperature=`` overrides it."""
    max_new_tokens: int = Field(
        default=DEFAULT_NUM_OUTPUTS, gt=0, description="Tokens to generate at most."
    )
    """Tokens to generate at most; a call's ``max_tokens=`` overrides it."""
    context_window: int = Field(
        default=DEFAULT_CONTEXT_WINDOW,
        gt=0,
        description="Context window requested from the engine (capped at the model's).",
    )
    """Context window to create the engine with, capped at the model's training context.
    ``metadata.context_window`` reports what the engine actually holds."""
    generate_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Default generation arguments of every call."
    )
    """Default generation arguments (``top_p``, ``top_k``, ``stop``, ``seed``,
    ``repeat_penalty``, ...) of every call; a call's own arguments override them."""
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Arguments of the Llama constructor."
    )
    """Arguments of the :class:`~llamacpp_integrations.Llama` constructor (``n_gpu_layers``,
    ``n_threads``, ``n_batch``, ``n_seq_max``, ``seed``, ``chat_format``, ...)."""
    verbose: bool = Field(default=False, description="Log llama.cpp's output.")
    """Forward llama.cpp's log to the ``llamacpp_integrations`` logger."""

    _client: Llama = PrivateAttr()
    _owns_client: bool = PrivateAttr(default=True)
    _shared: bool = PrivateAttr(default=False)
    _custom_messages_to_prompt: bool = PrivateAttr(default=False)
    _custom_completion_to_prompt: bool = PrivateAttr(default=False)

    def __init__(
        self,
        model_url: str | None = None,
        model_path: str | os.PathLike[str] | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        max_new_tokens: int = DEFAULT_NUM_OUTPUTS,
        context_window: int = DEFAULT_CONTEXT_WINDOW,
        callback_manager: CallbackManager | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        verbose: bool = False,
        system_prompt: str | None = None,
        messages_to_prompt: Callable[[Sequence[ChatMessage]], str] | None = None,
        completion_to_prompt: Callable[[str], str] | None = None,
        pydantic_program_mode: PydanticProgramMode = PydanticProgramMode.DEFAULT,
        output_parser: BaseOutputParser | None = None,
        *,
        client: Llama | None = None,
        model_sha256: str | None = None,
        share_client: bool = True,
        mmproj_path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Loads the model (or shares ``client``).

        Args:
            model_url: URL of a GGUF file, downloaded once into the cache (with a progress bar,
                resuming an interrupted download) when ``model_path`` is not given.
            model_path: Path to a GGUF file. With neither a path nor a URL (nor a client), the
                default model is used.
            temperature: Sampling temperature; 0 is greedy.
            max_new_tokens: Tokens to generate at most per call.
            context_window: Context window of the engine, capped at the model's training
                context (ignored with ``client``).
            callback_manager: LlamaIndex callback manager.
            generate_kwargs: Default generation arguments of every call.
            model_kwargs: Arguments of the :class:`~llamacpp_integrations.Llama` constructor
                (``n_ctx`` there overrides ``context_window``).
            verbose: Forward llama.cpp's log to the ``llamacpp_integrations`` logger.
            system_prompt: System message added to chats that have none, and to completions.
            messages_to_prompt: A formatter of messages into a raw prompt. Only when given,
                chat uses it instead of the model's chat template (except with tools or
                structured output, which need the template).
            completion_to_prompt: A formatter of a completion prompt into a raw prompt. Only
                when given, ``complete`` uses it instead of the model's chat template.
            pydantic_program_mode: How ``structured_predict`` works: ``DEFAULT`` uses the
                JSON-schema grammar; other modes use LlamaIndex's programs.
            output_parser: LlamaIndex output parser for ``predict``.
            client: A :class:`~llamacpp_integrations.Llama` to use instead of loading one (it
                is shared, and not closed by :meth:`close`).
            model_sha256: Expected SHA-256 (hex) of the file at ``model_url``.
            share_client: Use the process's one ``Llama`` for this GGUF and these settings,
                shared with every adapter that names them (False: load a separate one).
            mmproj_path: A vision projector GGUF for the model (as ``model_kwargs``'
                ``mmproj_path``): chat messages may then hold ``ImageBlock``s.
            **kwargs: Other LlamaIndex ``LLM`` fields.

        Raises:
            ModelLoadError: The model file is missing or invalid, or the download failed.
            InvalidParameterError: A bad URL, hash or engine argument.
            TypeError: An unknown key in ``model_kwargs`` (named, with the closest
                ``LoadOptions`` key), even with ``client``.
        """
        # the pydantic model's own __init__ (the structured-output mixin has none)
        FunctionCallingLLM.__init__(
            self,
            model_url=model_url,
            model_path=os.fspath(model_path) if model_path is not None else None,
            model_sha256=model_sha256,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            context_window=context_window,
            callback_manager=callback_manager or CallbackManager([]),
            generate_kwargs=dict(generate_kwargs or {}),
            model_kwargs={
                **(model_kwargs or {}),
                **({"mmproj_path": os.fspath(mmproj_path)} if mmproj_path is not None else {}),
            },
            verbose=verbose,
            system_prompt=system_prompt,
            messages_to_prompt=messages_to_prompt,
            completion_to_prompt=completion_to_prompt,
            pydantic_program_mode=pydantic_program_mode,
            output_parser=output_parser,
            **kwargs,
        )
        _check_generate_kwargs(self.generate_kwargs)
        check_load(self.model_kwargs, "LlamaCPP model_kwargs")  # a typo fails even with a client
        self._custom_messages_to_prompt = messages_to_prompt is not None
        self._custom_completion_to_prompt = completion_to_prompt is not None
        if client is not None:
            self._client = client
            self._owns_client = False
            self.model_path = client.model_path
            self.context_window = client.n_ctx()
            return
        if self.model_path is None:
            if self.model_url is not None:
                self.model_path = str(download_model(self.model_url, sha256=self.model_sha256))
            else:
                self.model_path = default_model_path()
        self._client = self._load(self.model_path, share_client)
        self._owns_client = True
        self._shared = share_client

    def _load(self, path: str, share: bool) -> Llama:
        params: dict[str, Any] = {"n_ctx": self.context_window, "verbose": self.verbose}
        params.update(self.model_kwargs)
        load_args = inspect.signature(load_model).parameters
        # the weights the Llama below will use (loaded once), to read their training context
        model = load_model(path, **{k: v for k, v in params.items() if k in load_args})
        if "n_ctx" not in self.model_kwargs and 0 < model.n_ctx_train < self.context_window:
            params["n_ctx"] = model.n_ctx_train  # more than the model was trained on: its own
        params["model_path"] = path
        return shared_llama(share, **params)

    @classmethod
    def class_name(cls) -> str:
        return "LlamaCPP"

    @property
    def metadata(self) -> LLMMetadata:
        """Context window (as the engine holds it), output budget, and capabilities."""
        return LLMMetadata(
            context_window=self._client.n_ctx(),
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=Path(self.model_path or "").name,
        )

    # ------------------------------------------------------------------ tokens

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids of ``text`` (no BOS, special tokens as plain text).

        Args:
            text: The text to count.

        Returns:
            The token ids.
        """
        return self._client.tokenize(text, add_bos=False, special=False)

    @property
    def tokenizer(self) -> Callable[[str], list[int]]:
        """A tokenizer function for ``Settings.tokenizer`` / ``set_global_tokenizer``, so that
        LlamaIndex's prompt budgets count this model's real tokens."""
        return self.tokenize

    # ------------------------------------------------------------------ requests

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The generation arguments of one call: defaults < generate_kwargs < the call's."""
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_new_tokens,
        }
        params.update(self.generate_kwargs)
        params.update(kwargs)
        if "max_new_tokens" in params:
            params["max_tokens"] = params.pop("max_new_tokens")
        for key in ("stream", "formatted"):
            if key in params:
                raise InvalidParameterError(f"{key!r} is not a generation argument")
        return params

    def _chat_messages(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        out = to_openai_messages(messages)
        if self.system_prompt and not any(m["role"] == "system" for m in out):
            out.insert(0, {"role": "system", "content": self.system_prompt})
        return out

    def _uses_formatter(self, params: dict[str, Any]) -> bool:
        return self._custom_messages_to_prompt and not any(params.get(k) for k in _TEMPLATE_ONLY)

    def _chat_args(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[bool, Any, dict[str, Any]]:
        """(raw completion?, prompt or OpenAI messages, generation arguments)."""
        params = self._params(kwargs)
        if self._uses_formatter(params):
            assert self.messages_to_prompt is not None
            return True, self.messages_to_prompt(messages), params
        return False, self._chat_messages(messages), params

    def _completion_args(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> tuple[bool, Any, dict[str, Any]]:
        """(raw completion?, prompt or OpenAI messages, generation arguments)."""
        params = self._params(kwargs)
        if formatted:
            return True, prompt, params
        if self._custom_completion_to_prompt:
            assert self.completion_to_prompt is not None
            return True, self.completion_to_prompt(prompt), params
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": prompt})
        return False, messages, params

    def _completion(self, prompt: str, params: dict[str, Any]) -> Mapping[str, Any]:
        out = self._client.create_completion(prompt, **params)
        assert isinstance(out, dict)
        return out

    def _chat_completion(
        self, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Mapping[str, Any]:
        out = self._client.create_chat_completion(messages, **params)
        assert isinstance(out, dict)
        return out

    async def _acompletion(self, prompt: str, params: dict[str, Any]) -> Mapping[str, Any]:
        out = await self._client.acreate_completion(prompt, **params)
        assert isinstance(out, dict)
        return out

    async def _achat_completion(
        self, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Mapping[str, Any]:
        out = await self._client.acreate_chat_completion(messages, **params)
        assert isinstance(out, dict)
        return out

    # ------------------------------------------------------------------ chat

    @chat_callback
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Replies to ``messages`` with the model's chat template.

        Args:
            messages: The conversation (text, tool calls, tool results).
            **kwargs: Generation arguments for this call only: ``temperature``,
                ``max_tokens``, ``stop``, ``top_p``, ``top_k``, ``seed``, ``tools``,
                ``tool_choice``, ``response_format``, ``logprobs``, ... (see
                :meth:`Llama.create_chat_completion`).

        Returns:
            The reply; tool calls are ``ToolCallBlock`` blocks (and OpenAI dicts in
            ``message.additional_kwargs["tool_calls"]``).
        """
        raw_prompt, request, params = self._chat_args(messages, kwargs)
        if raw_prompt:
            return text_as_chat(completion_response(self._completion(request, params)))
        return chat_response(self._chat_completion(request, params))

    @chat_callback
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Streams the reply to ``messages``; each response holds the message so far.

        Args:
            messages: The conversation.
            **kwargs: Generation arguments for this call only, as in :meth:`chat`.

        Returns:
            A generator of responses (``delta`` is the new text); closing it stops generation.
        """
        raw_prompt, request, params = self._chat_args(messages, kwargs)
        if raw_prompt:
            return chat_from_completion_stream(
                self._client.create_completion(request, stream=True, **params)
            )
        return chat_stream(self._client.create_chat_completion(request, stream=True, **params))

    @chat_callback
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` without blocking the event loop; cancelling the task stops generation.

        Args:
            messages: The conversation.
            **kwargs: Generation arguments for this call only, as in :meth:`chat`.

        Returns:
            The reply.
        """
        raw_prompt, request, params = self._chat_args(messages, kwargs)
        if raw_prompt:
            out = await self._acompletion(request, params)
            return text_as_chat(completion_response(out))
        return chat_response(await self._achat_completion(request, params))

    @chat_callback
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """:meth:`stream_chat` for asyncio.

        Args:
            messages: The conversation.
            **kwargs: Generation arguments for this call only, as in :meth:`chat`.

        Returns:
            An async generator of responses; closing it stops generation.
        """
        raw_prompt, request, params = self._chat_args(messages, kwargs)
        if raw_prompt:
            return achat_from_completion_stream(
                await self._client.acreate_completion(request, stream=True, **params)
            )
        return achat_stream(
            await self._client.acreate_chat_completion(request, stream=True, **params)
        )

    # ------------------------------------------------------------------ completion

    @completion_callback
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Completes ``prompt``.

        Without ``formatted`` and without a ``completion_to_prompt`` formatter, the prompt is
        sent as a user message through the model's chat template (after ``system_prompt``).

        Args:
            prompt: The prompt.
            formatted: The prompt is already formatted for the model: send it as raw text.
            **kwargs: Generation arguments for this call only (``temperature``,
                ``max_tokens``, ``stop``, ``seed``, ...).

        Returns:
            The completion.
        """
        raw_prompt, request, params = self._completion_args(prompt, formatted, kwargs)
        if raw_prompt:
            return completion_response(self._completion(request, params))
        return completion_response(self._chat_completion(request, params))

    @completion_callback
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Streams the completion of ``prompt``.

        Args:
            prompt: The prompt.
            formatted: The prompt is already formatted for the model: send it as raw text.
            **kwargs: Generation arguments for this call only.

        Returns:
            A generator of responses (``text`` so far, ``delta`` new); closing it stops.
        """
        raw_prompt, request, params = self._completion_args(prompt, formatted, kwargs)
        if raw_prompt:
            return completion_stream(self._client.create_completion(request, stream=True, **params))
        return completion_stream(
            self._client.create_chat_completion(request, stream=True, **params)
        )

    @completion_callback
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """:meth:`complete` without blocking the event loop.

        Args:
            prompt: The prompt.
            formatted: The prompt is already formatted for the model: send it as raw text.
            **kwargs: Generation arguments for this call only.

        Returns:
            The completion.
        """
        raw_prompt, request, params = self._completion_args(prompt, formatted, kwargs)
        if raw_prompt:
            return completion_response(await self._acompletion(request, params))
        return completion_response(await self._achat_completion(request, params))

    @completion_callback
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """:meth:`stream_complete` for asyncio.

        Args:
            prompt: The prompt.
            formatted: The prompt is already formatted for the model: send it as raw text.
            **kwargs: Generation arguments for this call only.

        Returns:
            An async generator of responses; closing it stops generation.
        """
        raw_prompt, request, params = self._completion_args(prompt, formatted, kwargs)
        if raw_prompt:
            return acompletion_stream(
                await self._client.acreate_completion(request, stream=True, **params)
            )
        return acompletion_stream(
            await self._client.acreate_chat_completion(request, stream=True, **params)
        )
