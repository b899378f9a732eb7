"""The engine owns the request: chat parsed in C++, one wakeup for a request that does not
stream, a worker that survives failures, close() that fails everything, KV eviction with its own
error, embeddings beside generation, and several engines in one process."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chat_data import ADD, THINKING_TEMPLATE, WEATHER, user

from llamacpp_integrations import (
    EngineClosedError,
    GrammarError,
    KVCacheFullError,
    Llama,
    _core,
)
from llamacpp_integrations._chat import ChatCompletionStream
from llamacpp_integrations._completion import wait_result

pytestmark = pytest.mark.integration


def greedy_tokens(llm: Llama, prompt: str, n: int) -> list[int]:
    out = llm.native_engine.submit(
        llm.tokenize(prompt), llm.sampling_params(temperature=0), max_tokens=n, ignore_eos=True
    ).result()
    return list(out.tokens)


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The message that streamed deltas add up to."""
    content, reasoning = "", ""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        delta = chunk["choices"][0]["delta"]
        content += delta.get("content") or ""
        reasoning += delta.get("reasoning_content") or ""
        for call in delta.get("tool_calls") or []:
            slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            slot["id"] += call.get("id", "")
            slot["name"] += call["function"].get("name", "")
            slot["arguments"] += call["function"].get("arguments", "")
    return {"content": content, "reasoning": reasoning, "calls": [calls[i] for i in sorted(calls)]}


CASES: list[tuple[str, dict[str, Any]]] = [
    ("content", {"messages": user("Write two sentences about the sea.")}),
    ("auto", {"messages": user("What is 2 plus 3?"), "tools": [ADD, WEATHER]}),
    (
        "required",
        {"messages": user("Weather in Paris?"), "tools": [ADD, WEATHER], "tool_choice": "required"},
    ),
    (
        "named",
        {
            "messages": user("Add 40 and 2."),
            "tools": [ADD, WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "add"}},
        },
    ),
    (
        "parallel",
        {
            "messages": user("Weather in Paris and in Rome?"),
            "tools": [WEATHER],
            "tool_choice": "required",
            "parallel_tool_calls": True,
        },
    ),
    (
        "schema",
        {
            "messages": user("A city and its country as JSON."),
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                        "required": ["city", "country"],
                    }
                },
            },
        },
    ),
]


@pytest.mark.parametrize(("name", "call"), CASES, ids=[c[0] for c in CASES])
def test_streamed_deltas_equal_the_final_message(
    llm: Llama, name: str, call: dict[str, Any]
) -> None:
    """Deltas the engine parsed while generating add up to the message it parsed at the end
    (ids included), and to the reply of the same request not streamed."""
    kwargs = {**call, "temperature": 0, "max_tokens": 80}
    llm.reset()
    whole = llm.create_chat_completion(**kwargs)
    assert isinstance(whole, dict)
    llm.reset()
    stream = llm.create_chat_completion(**kwargs, stream=True)
    assert isinstance(stream, ChatCompletionStream)
    chunks = list(stream)
    got = assemble(chunks)
    final = stream.result
    assert final is not None and final.message is not None
    assert got["content"] == final.message.content
    assert [(c["id"], c["name"], c["arguments"]) for c in got["calls"]] == [
        (tc.id, tc.name, tc.arguments) for tc in final.message.tool_calls
    ]
    msg = whole["choices"][0]["message"]
    assert got["content"] == (msg["content"] or "")
    assert [(c["name"], json.loads(c["arguments"])) for c in got["calls"]] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in msg.get("tool_calls", [])
    ]
    finish = chunks[-1]["choices"][0]["finish_reason"]
    assert finish == whole["choices"][0]["finish_reason"]
    if name in ("required", "named", "parallel"):
        assert got["calls"] and finish == "tool_calls"
    if name == "named":
        assert {c["name"] for c in got["calls"]} == {"add"}
    if name == "schema":
        assert set(json.loads(got["content"])) >= {"city", "country"}


def test_streamed_reasoning_equals_the_final_message(model_path: str) -> None:
    thinking = 'root ::= "<think>\\nThe user greets me.\\n</think>\\n\\nHello there!"'
    with Llama(model_path=model_path, n_ctx=512, chat_template=THINKING_TEMPLATE) as llm:
        stream = llm.create_chat_completion(
            user("Hi"), grammar=thinking, temperature=0, max_tokens=40, stream=True
        )
        assert isinstance(stream, ChatCompletionStream)
        got = assemble(list(stream))
        assert stream.result is not None and stream.result.message is not None
        assert got["reasoning"] == stream.result.message.reasoning_content
        assert got["content"] == stream.result.message.content
        assert got["reasoning"].strip() == "The user greets me."
        assert got["content"].strip() == "Hello there!"


def test_a_request_that_does_not_stream_wakes_its_waiter_once(llm: Llama) -> None:
    handle = llm.submit_completion("Once upon a time", max_tokens=64, temperature=0)
    response = handle.response()
    assert response["usage"]["completion_tokens"] > 8
    assert handle._request.wakeups == 1

    chat = llm.submit_chat_completion(user("Tell me a story."), max_tokens=64, temperature=0)
    assert chat.response()["usage"]["completion_tokens"] > 8
    assert chat._request.wakeups == 1

    async def run() -> int:
        h = llm.submit_chat_completion(user("Tell me a story."), max_tokens=64, temperature=0)
        await h.aresponse()
        return int(h._request.wakeups)

    assert asyncio.run(run()) == 1

    streamed = llm.submit_chat_completion(user("Tell me a story."), max_tokens=64, stream=True)
    n_chunks = len(list(streamed))
    # a chat stream wakes its reader only when the message changed, and once at the end
    assert 2 <= streamed._request.wakeups <= n_chunks


def test_a_failing_sampler_fails_its_request_alone(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=1024, n_seq_max=4) as llm:
        prompts = ["The sea is", "My favourite food is", "In the morning I", "The capital of"]
        alone = [greedy_tokens(llm, p, 24) for p in prompts]
        llm.reset()
        engine, sp = llm.native_engine, llm.sampling_params(temperature=0)
        requests = [
            engine.submit(
                llm.tokenize(p),
                sp,
                max_tokens=24,
                ignore_eos=True,
                debug_fail_at=5 if i == 1 else -1,
            )
            for i, p in enumerate(prompts)
        ]
        with pytest.raises(RuntimeError, match="debug_fail_at"):
            requests[1].result()
        for i in (0, 2, 3):
            assert list(requests[i].result().tokens) == alone[i]
        # the engine keeps serving
        assert greedy_tokens(llm, prompts[1], 24) == alone[1]


def test_close_fails_every_streaming_and_waiting_request(model_path: str) -> None:
    llm = Llama(model_path=model_path, n_ctx=1024, n_seq_max=4)
    streams = [
        llm.create_completion(f"Story {i}:", max_tokens=-1, ignore_eos=True, stream=True)
        for i in range(4)
    ]
    waiting = [
        llm.submit_completion(f"Poem {i}:", max_tokens=-1, ignore_eos=True) for i in range(4)
    ]
    errors: list[BaseException] = []
    lock = threading.Lock()
    started = threading.Barrier(9)

    def consume_stream(s: Any) -> None:
        try:
            started.wait()
            for _ in s:
                pass
        except BaseException as e:
            with lock:
                errors.append(e)

    def wait_one(h: Any) -> None:
        try:
            started.wait()
            h.response()
        except BaseException as e:
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=consume_stream, args=(s,)) for s in streams]
    threads += [threading.Thread(target=wait_one, args=(h,)) for h in waiting]
    for t in threads:
        t.start()
    started.wait()
    next(iter(streams[0]))  # generation is under way (the first chunk of stream 0 exists)
    closer = threading.Thread(target=llm.close)
    closer.start()
    closer.join(60)
    for t in threads:
        t.join(60)
    assert not closer.is_alive() and not any(t.is_alive() for t in threads), "close() hung"
    assert len(errors) == 8
    assert all(isinstance(e, EngineClosedError) for e in errors), errors


def test_no_kv_room_ends_the_newest_request_with_its_own_error(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=256, n_seq_max=4, kv_unified=True) as llm:
        handles = [
            llm.submit_completion(
                f"List {i}:" + " one two three" * 6, max_tokens=-1, ignore_eos=True
            )
            for i in range(4)
        ]
        outcomes: list[str] = []
        for h in handles:
            try:
                outcomes.append(h.response()["choices"][0]["finish_reason"])
            except KVCacheFullError as e:
                assert "KV cache is full" in str(e)
                outcomes.append("evicted")
        # a unified pool of 256 cells cannot hold four growing requests: the newest give way with
        # KVCacheFullError (never a silent "length"); the oldest runs to its context's end
        assert outcomes[0] == "length"
        assert "evicted" in outcomes
        assert "length" not in outcomes[1:]
        after = llm("The sea is", max_tokens=8, temperature=0)
        assert isinstance(after, dict) and after["usage"]["completion_tokens"] == 8


def test_grammar_errors_leave_other_threads_stderr_alone(
    llm: Llama, capfd: pytest.CaptureFixture[str]
) -> None:
    lines = [f"other thread line {i}" for i in range(200)]
    done = threading.Event()

    def writer() -> None:
        for line in lines:
            os.write(2, (line + "\n").encode())
            time.sleep(0.0005)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    messages = []
    while not done.is_set():
        with pytest.raises(GrammarError) as info:
            llm("x", grammar='root ::= ("a"', max_tokens=1)
        messages.append(str(info.value))
    t.join()
    err = capfd.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("other thread")] == lines
    assert messages and all("invalid GBNF grammar" in m for m in messages)
    assert "error parsing grammar" not in err  # llama.cpp's own print never ran


def test_grammar_diagnoses_name_the_cause(llm: Llama) -> None:
    cases = {
        'root ::= ("a"': "expecting '\\)' at the end of the grammar",
        'root ::= "a"{3,1}': "upper bound below its lower bound",
        "root ::= missing": "Undefined rule identifier 'missing'",
        'root ::= "a\x00b"': "NUL character",
        "root ::= [a-": "unexpected end of input",
        "root ::= x\nx ::= x": "left recursion",
    }
    for grammar, cause in cases.items():
        with pytest.raises(GrammarError, match=cause):
            llm("x", grammar=grammar, max_tokens=1)


def conversation_turn(llm: Llama, history: list[dict[str, str]]) -> dict[str, Any]:
    out = llm.create_chat_completion(history, temperature=0, max_tokens=24)
    assert isinstance(out, dict)
    history.append({"role": "assistant", "content": out["choices"][0]["message"]["content"]})
    return dict(out)


def test_embeddings_keep_every_conversations_cache(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=2048, n_seq_max=4) as llm:
        convs = [
            [{"role": "user", "content": f"Conversation {i}: tell me about the number {i}."}]
            for i in range(4)
        ]
        first = [conversation_turn(llm, c) for c in convs]
        for c in convs:
            c.append({"role": "user", "content": "And then?"})
        vectors = llm.embed([f"document number {i} about the sea" for i in range(24)])
        assert len(vectors) == 24
        for c, turn1 in zip(convs, first, strict=True):
            second = conversation_turn(llm, c)
            cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
            # the whole first turn (prompt and reply) is still in its slot's cache
            assert cached >= turn1["usage"]["prompt_tokens"], (cached, turn1["usage"])


def test_generation_goes_on_while_texts_are_embedded(llm: Llama) -> None:
    stream = llm.create_completion("Once upon a time", max_tokens=-1, ignore_eos=True, stream=True)
    received: list[float] = []
    stop = threading.Event()

    def read() -> None:
        for _ in stream:
            received.append(time.monotonic())
            if stop.is_set():
                break
        stream.close()

    reader = threading.Thread(target=read)
    reader.start()
    while not received:
        time.sleep(0.01)
    texts = [f"text {i}: " + "the quick brown fox jumps over the lazy dog " * 8 for i in range(8)]
    t0 = time.monotonic()
    vectors = llm.embed(texts)
    t1 = time.monotonic()
    stop.set()
    reader.join(60)
    assert len(vectors) == 8
    during = [t for t in received if t0 < t < t1]
    # 8 texts of ~100 tokens take 8 batches beside a generation, which keeps 80% of the time
    # (embedding them all at once let 2 tokens through: tokens already on their way)
    assert len(during) >= 20, (len(during), t1 - t0)


def test_two_engines_in_one_process_generate_correctly_at_once(model_path: str) -> None:
    with (
        Llama(model_path=model_path, n_ctx=512) as a,
        Llama(model_path=model_path, n_ctx=512, n_seq_max=2) as b,
    ):
        prompts = ["The sea is", "In the morning I"]
        alone = [greedy_tokens(a, prompts[0], 32), greedy_tokens(b, prompts[1], 32)]
        a.reset()
        b.reset()
        before = _core.compute_count()
        results: dict[int, list[int]] = {}

        def run(i: int, llm: Llama) -> None:
            results[i] = greedy_tokens(llm, prompts[i], 32)

        threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [results[0], results[1]] == alone
        # every decode of both engines ran on the one compute thread
        assert _core.compute_count() - before >= 64


@pytest.fixture
def generic_llm(model_path: str) -> Iterator[Llama]:
    with Llama(model_path=model_path, n_ctx=1024) as llm:
        yield llm


def test_a_generic_protocol_answer_is_never_empty(generic_llm: Llama) -> None:
    """Pushed towards closing the string at once, the model still has to write an answer:
    the grammar of {"response": "..."} requires at least one character."""
    llm = generic_llm
    prompt = llm.chat_templates.apply(
        json.dumps(user("Hi")), tools_json=json.dumps([WEATHER]), tool_choice="auto"
    )
    assert prompt.format == "generic"
    vocab = llm.n_vocab()
    quote = {t: 30.0 for t in range(vocab) if llm.detokenize([t]).startswith(b'"')}
    word = llm.tokenize("response", add_bos=False)
    bias = {**quote, word[0]: 30.0}
    out = llm.create_chat_completion(
        user("Hi"),
        tools=[WEATHER],
        tool_choice="auto",
        temperature=0,
        max_tokens=24,
        logit_bias=bias,
    )
    assert isinstance(out, dict)
    msg = out["choices"][0]["message"]
    assert "tool_calls" not in msg
    assert msg["content"] != ""


class CountingRequest:
    """A real native request whose waits are counted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.waits = 0

    @property
    def done(self) -> bool:
        return bool(self.inner.done)

    def wait(self, timeout: float) -> bool:
        self.waits += 1
        return bool(self.inner.wait(timeout))

    def next_event(self) -> Any:
        return self.inner.next_event()

    def result(self) -> Any:
        return self.inner.result()

    def cancel(self) -> None:
        self.inner.cancel()


def test_a_waiting_worker_thread_sleeps_until_the_end(llm: Llama) -> None:
    """Off the main thread (which also wakes every 50 ms for Ctrl-C), waiting for a result
    that does not stream is one native wait, woken once by the engine."""
    request = CountingRequest(
        llm.native_engine.submit(
            llm.tokenize("Once upon a time"), llm.sampling_params(temperature=0), max_tokens=48
        )
    )
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(result=wait_result(request)))  # type: ignore[arg-type]
    t.start()
    t.join(120)
    assert box["result"].n_completion == 48
    assert request.waits == 1
    assert request.inner.wakeups == 1


def _generate_in_child(model_path: str, queue: Any) -> None:
    with Llama(model_path=model_path, n_ctx=256) as child:
        out = child("The sea is", max_tokens=8, temperature=0)
        queue.put(out["usage"]["completion_tokens"])  # type: ignore[index]


def test_a_forked_child_gets_its_own_compute_thread(llm: Llama, model_path: str) -> None:
    """The parent has computed (its compute thread exists); a child forked from it, which has
    none of the parent's threads, must still be able to load a model and generate."""
    import multiprocessing

    llm("warm", max_tokens=2)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_generate_in_child, args=(model_path, queue))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 8
