"""LlamaIndex ``LlamaCPP`` on the default model: chat and completion (sync, streaming, async),
per-call arguments, the model's chat template vs custom formatters, instrumentation, the
tokenizer, and loading from ``model_url``."""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

import llama_index.core
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.utils import get_tokenizer

from llamacpp_integrations import InvalidParameterError, Llama, ModelLoadError, _core
from llamacpp_integrations.llama_index import LlamaCPP
from llamacpp_integrations.models import DEFAULT_MODEL


@pytest.fixture(autouse=True)
def restore_llama_index_settings() -> Iterator[None]:
    """LlamaIndex's Settings and global tokenizer are process-wide: put them back."""
    saved = dict(vars(Settings))
    tokenizer = llama_index.core.global_tokenizer
    try:
        yield
    finally:
        vars(Settings).clear()
        vars(Settings).update(saved)
        llama_index.core.global_tokenizer = tokenizer


@pytest.fixture(scope="module")
def li_llm(llm: Llama) -> LlamaCPP:
    """The session's Llama, shared through ``client=``; greedy, short answers."""
    return LlamaCPP(client=llm, temperature=0.0, max_new_tokens=24)


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def prompt_tokens(response: Any) -> int:
    return int(response.raw["usage"]["prompt_tokens"])


# ---------------------------------------------------------------------------- construction


def test_metadata_comes_from_the_engine(li_llm: LlamaCPP, llm: Llama) -> None:
    meta = li_llm.metadata
    assert meta.context_window == llm.n_ctx() == 2048
    assert meta.num_output == 24
    assert meta.is_chat_model and meta.is_function_calling_model
    assert meta.model_name == DEFAULT_MODEL.filename
    assert li_llm.client is llm
    assert li_llm.class_name() == "LlamaCPP"


def test_fields_of_the_old_class_are_accepted(model_path: str) -> None:
    old_style = LlamaCPP(
        model_url=None,
        model_path=model_path,
        temperature=0.1,
        max_new_tokens=8,
        context_window=1000,
        generate_kwargs={"top_k": 1},
        model_kwargs={"n_threads": 1, "seed": 7},
        verbose=False,
        system_prompt=None,
    )
    try:
        # the engine rounds the window up; metadata reports what it really holds
        assert old_style.metadata.context_window == old_style.client.n_ctx() >= 1000
        assert old_style.metadata.num_output == 8
        out = old_style.complete("Say yes.")
        assert out.text and out.additional_kwargs["completion_tokens"] <= 8
    finally:
        old_style.close()


def test_context_window_is_capped_at_the_models(model_path: str) -> None:
    big = LlamaCPP(model_path=model_path, context_window=1_000_000)
    try:
        assert big.metadata.context_window == big.client.native_model.n_ctx_train == 8192
    finally:
        big.close()


def test_unknown_model_kwargs_raise(model_path: str) -> None:
    with pytest.raises(TypeError, match="n_gpu_layer"):
        LlamaCPP(model_path=model_path, model_kwargs={"n_gpu_layer": 1})


def test_missing_model_path_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        LlamaCPP(model_path=tmp_path / "missing.gguf")


class _ModelServer:
    def __init__(self, directory: str) -> None:
        handler = functools.partial(_QuietHandler, directory=directory)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_model_url_downloads_verifies_and_loads(
    model_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACPP_INTEGRATIONS_CACHE", str(tmp_path / "cache"))
    server = _ModelServer(str(Path(model_path).parent))
    try:
        url = server.url(Path(model_path).name)
        remote = LlamaCPP(model_url=url, model_sha256=DEFAULT_MODEL.sha256, max_new_tokens=4)
        try:
            assert remote.model_path is not None
            assert Path(remote.model_path).is_relative_to(tmp_path / "cache")
            assert Path(remote.model_path).stat().st_size == Path(model_path).stat().st_size
            assert remote.complete("Hi").text
        finally:
            remote.close()
        with pytest.raises(ModelLoadError, match="HTTP 404"):
            LlamaCPP(model_url=server.url("nothing-here.gguf"))
    finally:
        server.close()


# ---------------------------------------------------------------------------- chat, completion


def test_chat_uses_the_models_template(li_llm: LlamaCPP) -> None:
    response = li_llm.chat(user("What is the capital of France?"))
    assert response.raw["object"] == "chat.completion"
    text = response.message.content or ""
    assert text
    assert "[INST]" not in text and "<|im_start|>" not in text
    assert response.message.role == "assistant"
    usage = response.additional_kwargs
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_complete_goes_through_the_template_unless_formatted(li_llm: LlamaCPP, llm: Llama) -> None:
    prompt = "The capital of France is"
    templated = li_llm.complete(prompt)
    assert templated.raw["object"] == "chat.completion"
    raw = li_llm.complete(prompt, formatted=True, max_tokens=4)
    assert raw.raw["object"] == "text_completion"
    assert prompt_tokens(raw) == len(llm.tokenize(prompt))
    assert prompt_tokens(templated) > prompt_tokens(raw)  # the template's role markers


def test_formatter_callables_are_used_only_when_given(llm: Llama) -> None:
    seen: list[int] = []

    def messages_to_prompt(messages: Any) -> str:
        seen.append(len(messages))
        return "".join(f"{m.role.value}: {m.content}\n" for m in messages) + "assistant:"

    def completion_to_prompt(completion: str) -> str:
        return f"Q: {completion}\nA:"

    custom = LlamaCPP(
        client=llm,
        temperature=0.0,
        max_new_tokens=8,
        messages_to_prompt=messages_to_prompt,
        completion_to_prompt=completion_to_prompt,
    )
    chat = custom.chat(user("Hi"))
    assert chat.raw["object"] == "text_completion"
    assert seen == [1]
    assert prompt_tokens(chat) == len(llm.tokenize("user: Hi\nassistant:"))
    done = custom.complete("Hi")
    assert done.raw["object"] == "text_completion"
    assert prompt_tokens(done) == len(llm.tokenize("Q: Hi\nA:"))
    # tools need the model's template, whatever formatter is set
    tool = {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}
    with_tools = custom.chat(user("Hi"), tools=[tool], tool_choice="required")
    assert with_tools.raw["object"] == "chat.completion"
    assert seen == [1]


def test_system_prompt_fills_in_a_missing_system_message(llm: Llama) -> None:
    plain = LlamaCPP(client=llm, temperature=0.0, max_new_tokens=1)
    with_system = LlamaCPP(client=llm, temperature=0.0, max_new_tokens=1, system_prompt="Be brief.")
    explicit = [ChatMessage(role="system", content="Be brief."), *user("Hi")]
    assert prompt_tokens(with_system.chat(user("Hi"))) == prompt_tokens(plain.chat(explicit))
    # an explicit system message wins over system_prompt
    other = [ChatMessage(role="system", content="Be very, very brief."), *user("Hi")]
    assert prompt_tokens(with_system.chat(other)) == prompt_tokens(plain.chat(other))


def test_streams_accumulate_to_the_whole_answer(li_llm: LlamaCPP) -> None:
    chunks = list(li_llm.stream_complete("Count from 1 to 5."))
    assert len(chunks) > 2
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].text
    assert chunks[-1].additional_kwargs["completion_tokens"] > 0
    chat_chunks = list(li_llm.stream_chat(user("Name three colours.")))
    assert "".join(c.delta or "" for c in chat_chunks) == chat_chunks[-1].message.content
    assert chat_chunks[-1].raw["usage"]["completion_tokens"] > 0


def test_closing_a_stream_stops_generation(li_llm: LlamaCPP) -> None:
    """Counted in decodes, not seconds: kv_used() waits until no request is active, so had the
    2000-token generation gone on after close(), ~2000 decodes would run before it returns."""
    stream = li_llm.stream_complete("Write a story.", max_tokens=2000, ignore_eos=True)
    assert next(stream).delta
    before = _core.compute_count()
    stream.close()
    li_llm.client.native_engine.kv_used()
    assert _core.compute_count() - before < 100
    assert li_llm.complete("Say hi.", max_tokens=2).text


def test_image_blocks_without_a_projector_are_refused_clearly(li_llm: LlamaCPP) -> None:
    message = ChatMessage(
        role="user",
        blocks=[TextBlock(text="What is this?"), ImageBlock(image=b"\x89PNG", image_mimetype="x")],
    )
    with pytest.raises(InvalidParameterError, match="no vision projector"):
        li_llm.chat([message])


# ---------------------------------------------------------------------------- async


async def test_async_methods_do_not_block_the_event_loop(li_llm: LlamaCPP) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        done = await li_llm.acomplete("Tell me about llamas.", max_tokens=24)
        chat = await li_llm.achat(user("Name a fruit."))
        deltas = [r.delta async for r in await li_llm.astream_complete("Count to 3.")]
        chat_stream = [r async for r in await li_llm.astream_chat(user("Say hi."))]
    finally:
        stop.set()
        await task
    assert done.text and chat.message.content
    assert "".join(d or "" for d in deltas)
    assert chat_stream[-1].message.content == "".join(r.delta or "" for r in chat_stream)
    assert ticks > 10  # the loop kept running while the model generated


# ---------------------------------------------------------------------------- per-call arguments


def test_per_call_arguments_are_honoured_without_mutating_the_llm(llm: Llama) -> None:
    li = LlamaCPP(client=llm, temperature=0.0, max_new_tokens=24, generate_kwargs={"top_k": 40})
    before = li.model_dump()
    short = li.complete("Write a poem about the sea.", max_tokens=3)
    assert short.additional_kwargs["completion_tokens"] == 3
    legacy_name = li.complete("Write a poem about the sea.", max_new_tokens=2)
    assert legacy_name.additional_kwargs["completion_tokens"] == 2
    counted = li.complete("Count from 1 to 10, separated by commas.", stop=["4"], max_tokens=40)
    assert "4" not in counted.text and "3" in counted.text
    hot = {li.complete("Invent a word.", temperature=1.5, seed=s).text for s in (1, 2, 3)}
    assert len(hot) > 1  # a per-call temperature and seed, not the greedy default
    assert li.model_dump() == before
    assert li.complete("Write a poem about the sea.").additional_kwargs["completion_tokens"] > 3


async def test_concurrent_calls_keep_their_own_arguments(li_llm: LlamaCPP) -> None:
    a, b, c = await asyncio.gather(
        li_llm.acomplete("Write a poem.", max_tokens=2),
        li_llm.acomplete("Write a poem.", max_tokens=5),
        li_llm.achat(user("Write a poem."), max_tokens=7),
    )
    assert a.additional_kwargs["completion_tokens"] == 2
    assert b.additional_kwargs["completion_tokens"] == 5
    assert c.additional_kwargs["completion_tokens"] == 7


def test_unknown_arguments_are_not_silently_dropped(li_llm: LlamaCPP) -> None:
    with pytest.raises(TypeError, match="temprature"):
        li_llm.complete("Hi", temprature=0.5)
    with pytest.raises(TypeError, match="top_q"):
        li_llm.chat(user("Hi"), top_q=0.5)


# ---------------------------------------------------------------------------- instrumentation


class _Events(BaseEventHandler):
    names: list[str]

    @classmethod
    def class_name(cls) -> str:
        return "_Events"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.names.append(event.class_name())


class _Callbacks(BaseCallbackHandler):
    def __init__(self) -> None:
        super().__init__([], [])
        self.started: list[CBEventType] = []
        self.ended: list[tuple[CBEventType, Any]] = []

    def on_event_start(
        self, event_type: CBEventType, payload: Any = None, event_id: str = "", **kw: Any
    ) -> str:
        self.started.append(event_type)
        return event_id

    def on_event_end(
        self, event_type: CBEventType, payload: Any = None, event_id: str = "", **kw: Any
    ) -> None:
        self.ended.append((event_type, payload))

    def start_trace(self, trace_id: str | None = None) -> None:
        pass

    def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None:
        pass


async def test_instrumentation_events_and_callbacks_fire(llm: Llama) -> None:
    callbacks = _Callbacks()
    li = LlamaCPP(
        client=llm, temperature=0.0, max_new_tokens=4, callback_manager=CallbackManager([callbacks])
    )
    events = _Events(names=[])
    root = get_dispatcher()
    root.add_event_handler(events)
    try:
        li.complete("Hi")
        li.chat(user("Hi"))
        list(li.stream_chat(user("Hi")))
        await li.acomplete("Hi")
        [r async for r in await li.astream_complete("Hi")]
    finally:
        root.event_handlers.remove(events)
    names = events.names
    assert names.count("LLMCompletionStartEvent") == 3
    assert names.count("LLMCompletionEndEvent") == 3
    assert names.count("LLMChatStartEvent") == 2
    assert names.count("LLMChatEndEvent") == 2
    assert "LLMChatInProgressEvent" in names and "LLMCompletionInProgressEvent" in names
    assert callbacks.started == [CBEventType.LLM] * 5
    assert [e for e, _ in callbacks.ended] == [CBEventType.LLM] * 5


# ---------------------------------------------------------------------------- tokenizer


def test_tokenizer_counts_the_models_tokens(li_llm: LlamaCPP, llm: Llama) -> None:
    Settings.tokenizer = li_llm.tokenizer
    text = "LlamaIndex counts prompt budgets in tokens: ünïcödé, 12345, <|im_end|>."
    counted = get_tokenizer()(text)
    assert counted == li_llm.tokenize(text) == llm.tokenize(text, add_bos=False)
    raw = li_llm.complete(text, formatted=True, max_tokens=1)
    assert prompt_tokens(raw) == len(llm.tokenize(text)) >= len(counted)
