"""Many requests on one model: slots, continuous batching, queueing, cancellation, no cross-talk."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import pytest
from chat_data import ADD

from llamacpp_integrations import ContextWindowExceededError, KVCacheFullError, Llama

pytestmark = pytest.mark.integration

WORDS = ["apple", "river", "guitar", "planet", "candle", "violin", "forest", "copper"]


@pytest.fixture(scope="module")
def multi(model_path: str) -> Iterator[Llama]:
    with Llama(model_path=model_path, n_ctx=4096, seed=1234) as model:  # n_seq_max=8
        yield model


def greedy(llm: Llama, prompt: str, n: int = 16) -> str:
    out = llm(prompt, max_tokens=n, temperature=0)
    return str(out["choices"][0]["text"])  # type: ignore[index]


def test_no_cross_talk_between_concurrent_sequences(multi: Llama) -> None:
    prompts = [f"{w}, {w}, {w}, {w}, {w}," for w in WORDS]
    with ThreadPoolExecutor(len(prompts)) as pool:
        outs = list(pool.map(lambda p: greedy(multi, p, 8), prompts))
    for word, out in zip(WORDS, outs, strict=True):
        assert word in out, (word, out)
        assert not [w for w in WORDS if w != word and w in out], (word, out)


def test_batched_greedy_matches_alone(multi: Llama) -> None:
    """20 prompts x 32 tokens, decoded 4 at a time from a cold cache,
    against each decoded alone from a cold cache."""
    topics = ["the sea", "a cat", "music", "winter", "bread", "trains", "the moon", "chess",
              "rain", "coffee", "bees", "mountains", "a library", "robots", "gardens", "fire",
              "the desert", "clocks", "birds", "paper"]  # fmt: skip
    prompts = [f"Here is a short note about {t}:" for t in topics]
    alone = []
    for p in prompts:
        multi.reset()
        alone.append(greedy(multi, p, 32))
    batched: dict[int, str] = {}
    for start in range(0, len(prompts), 4):
        multi.reset()
        barrier = threading.Barrier(4)

        def run(i: int, barrier: threading.Barrier) -> None:
            barrier.wait()  # all four are queued together
            batched[i] = greedy(multi, prompts[i], 32)

        threads = [threading.Thread(target=run, args=(i, barrier)) for i in range(start, start + 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    same = sum(alone[i] == batched[i] for i in range(len(prompts)))
    print(f"batched == alone on {same}/{len(prompts)} prompts")
    assert same >= 18


def test_32_threads_of_mixed_requests_finish(multi: Llama) -> None:
    add = ADD
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }

    def job(i: int) -> tuple[str, Any]:
        kind = ("completion", "chat", "tool", "json")[i % 4]
        if kind == "completion":
            return kind, multi(f"Count: {i},", max_tokens=12)
        messages = [{"role": "user", "content": f"Request {i}: tell me about number {i}."}]
        if kind == "chat":
            return kind, multi.create_chat_completion(messages, max_tokens=12)
        if kind == "tool":
            return kind, multi.create_chat_completion(
                messages, tools=[add], tool_choice="required", max_tokens=48
            )
        fmt = {"type": "json_schema", "json_schema": {"schema": schema}}
        return kind, multi.create_chat_completion(
            messages, response_format=fmt, max_tokens=48, dry_multiplier=0.8
        )

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(job, range(32), timeout=240))
    assert len(results) == 32
    for kind, out in results:
        choice = out["choices"][0]
        if kind == "completion":
            assert choice["finish_reason"] in ("stop", "length")
        elif kind == "tool":
            call = choice["message"]["tool_calls"][0]
            assert call["function"]["name"] == "add"
            jsonschema.validate(
                json.loads(call["function"]["arguments"]), add["function"]["parameters"]
            )  # type: ignore[index]
        elif kind == "json" and choice["finish_reason"] == "stop":
            jsonschema.validate(json.loads(choice["message"]["content"]), schema)


def test_cancelling_one_stream_leaves_the_others_untouched(multi: Llama) -> None:
    prompts = ["The history of Rome:", "The history of Paris:", "The history of Oslo:"]
    multi.reset()
    alone = {p: greedy(multi, p, 24) for p in prompts}
    multi.reset()
    texts: dict[str, str] = {}
    cancelled_finish: list[str] = []

    def consume(p: str) -> None:
        stream = multi(p, max_tokens=24 if p != prompts[1] else 2000, temperature=0, stream=True)
        text = ""
        for n, chunk in enumerate(stream):  # type: ignore[union-attr]
            text += chunk["choices"][0]["text"]
            if p == prompts[1] and n == 3:
                stream.close()  # type: ignore[union-attr]
                cancelled_finish.append(stream.result.finish_reason if stream.result else "closed")  # type: ignore[union-attr]
                break
        texts[p] = text

    threads = [threading.Thread(target=consume, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert cancelled_finish
    assert texts[prompts[0]] == alone[prompts[0]]
    assert texts[prompts[2]] == alone[prompts[2]]


def test_requests_beyond_the_slots_queue_and_all_finish(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=2048, n_seq_max=2, seed=1) as llm:
        with ThreadPoolExecutor(6) as pool:
            outs = list(pool.map(lambda i: llm(f"Item {i}:", max_tokens=8), range(6)))
        assert all(o["choices"][0]["finish_reason"] in ("stop", "length") for o in outs)  # type: ignore[index]


def test_interleaved_conversations_keep_their_prefix_cache(multi: Llama) -> None:
    """Turns alternate between two conversations; each turn reuses its own conversation's
    cached history instead of re-reading it."""
    multi.reset()
    convs: list[list[dict[str, Any]]] = [
        [{"role": "system", "content": "You answer questions about the sea. " * 20}],
        [{"role": "system", "content": "You answer questions about space. " * 20}],
    ]
    cached = []
    for turn in range(3):
        for conv in convs:
            conv.append({"role": "user", "content": f"Question {turn}: tell me one fact."})
            out = multi.create_chat_completion(conv, max_tokens=12, temperature=0)
            conv.append(out["choices"][0]["message"])  # type: ignore[index,arg-type]
            cached.append(out["usage"]["prompt_tokens_details"]["cached_tokens"])  # type: ignore[index]
            if turn > 0:
                assert cached[-1] > 150, cached  # the whole earlier history came from the cache


def test_a_full_unified_pool_ends_requests_cleanly(model_path: str) -> None:
    """Four requests outgrow a unified pool of 256 cells: each either finishes or is evicted with
    KVCacheFullError (never a silent "length"), and the engine keeps serving."""

    def run(llm: Llama, i: int) -> str:
        try:
            out = llm(f"Story {i}:", max_tokens=200, ignore_eos=True)
        except KVCacheFullError:
            return "evicted"
        return str(out["choices"][0]["finish_reason"])  # type: ignore[index]

    with Llama(model_path=model_path, n_ctx=256, n_seq_max=4, kv_unified=True, seed=1) as llm:
        with ThreadPoolExecutor(4) as pool:
            reasons = list(pool.map(lambda i: run(llm, i), range(4)))
        assert all(r in ("length", "stop", "evicted") for r in reasons)
        assert "evicted" in reasons and reasons.count("evicted") < 4
        assert llm("Hi", max_tokens=2)["choices"][0]["finish_reason"] in ("length", "stop")  # type: ignore[index]


async def test_async_requests_run_together(multi: Llama) -> None:
    outs = await asyncio.gather(
        *[
            multi.acreate_completion(f"{w}, {w}, {w}, {w},", max_tokens=6, temperature=0)
            for w in WORDS
        ]
    )
    for word, out in zip(WORDS, outs, strict=True):
        assert word in out["choices"][0]["text"]  # type: ignore[index]


# ------------------------------------------------------------------ a KV stream per slot


def text_of(llm: Llama, i: int, n_tokens: int) -> str:
    """A distinct prompt of at most n_tokens tokens (and more than n_tokens - 16)."""
    sentences: list[str] = []
    while True:
        k = len(sentences)
        sentence = f"Fact {k} of note {i}: shelf {k % 13} holds item {k * 7 + i}."
        if len(llm.tokenize(" ".join([*sentences, sentence]).encode())) > n_tokens:
            return " ".join(sentences)
        sentences.append(sentence)


def test_each_slot_has_n_ctx_of_its_own(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=512, n_seq_max=4) as llm:
        assert llm.n_ctx() == 512
        assert llm._require_engine().n_ctx == 4 * 512  # the cells of four streams
        with Llama(model_path=model_path, n_ctx=512, n_seq_max=4, kv_unified=True) as pool:
            assert pool.n_ctx() == pool._require_engine().n_ctx == 512


def test_a_conversation_fills_its_window_while_the_other_slots_are_busy(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=512, n_seq_max=4) as llm:
        busy = [
            llm.submit_completion(f"Story {i}:", max_tokens=300, ignore_eos=True) for i in range(3)
        ]
        out = llm(text_of(llm, 0, 400), max_tokens=-1, ignore_eos=True)
        usage = out["usage"]  # type: ignore[index]
        assert out["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
        # the whole window: n_ctx tokens in the KV cache, plus the last one sampled
        assert usage["total_tokens"] == llm.n_ctx() + 1, usage
        for handle in busy:
            res = handle.response()
            assert res["usage"]["completion_tokens"] == 300  # type: ignore[index]


def test_four_conversations_near_n_ctx_stay_cached_at_once(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=512, n_seq_max=4) as llm:
        prompts = [text_of(llm, i, 470) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            firsts = list(pool.map(lambda p: llm(p, max_tokens=8, temperature=0), prompts))
        # each returns to its own cache, whole, in any order
        for p, first in zip(reversed(prompts), reversed(firsts), strict=True):
            again = llm(p + " Fact", max_tokens=4, temperature=0)
            n_prompt = first["usage"]["prompt_tokens"]  # type: ignore[index]
            cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
            assert n_prompt > 450 and cached >= n_prompt - 1, (n_prompt, cached)


def test_a_prompt_longer_than_its_slot_is_refused_at_submit(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=256, n_seq_max=4) as llm:
        busy = llm.submit_completion("Story:", max_tokens=64, ignore_eos=True)
        # four slots hold 1024 cells, but one conversation gets only its own 256
        with pytest.raises(ContextWindowExceededError, match="context window"):
            llm(text_of(llm, 1, 400), max_tokens=4)
        assert busy.response()["usage"]["completion_tokens"] == 64  # type: ignore[index]


def test_a_new_request_takes_an_empty_slot_before_an_idle_cache(model_path: str) -> None:
    """Slots 0 and 2 hold idle conversations, slot 1 generates, slot 3 is empty: a new request
    goes to slot 3 (even though slots next to the busy one would save llama.cpp a ubatch), so
    both conversations keep their caches."""
    with Llama(model_path=model_path, n_ctx=1024, n_seq_max=4) as llm:
        docs = [text_of(llm, i, 300) for i in range(3)]
        for d in docs:  # slots 0, 1, 2, in order (empty slots first)
            llm(d, max_tokens=1)
        engine = llm._require_engine()
        assert [len(engine.cached_tokens(i)) > 250 for i in range(4)] == [True] * 3 + [False]
        busy = llm.submit_completion(docs[1] + " More:", max_tokens=200, ignore_eos=True)
        llm("A new question with no cached prefix:", max_tokens=2)
        busy.response()
        for d in (docs[0], docs[2]):
            out = llm(d + " Fact", max_tokens=1)
            cached = out["usage"]["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
            assert cached >= out["usage"]["prompt_tokens"] - 4, out["usage"]  # type: ignore[index]


def test_the_same_prompt_again_is_served_from_its_cache_past_a_long_reply(model_path: str) -> None:
    """A retry (or another sample) of the slot's last prompt reuses that prompt's cache even
    though the earlier reply is longer than the prompt; a prompt that only shares the opening of
    a longer cache still leaves that cache alone."""
    with Llama(model_path=model_path, n_ctx=1024, n_seq_max=4) as llm:
        chat = [{"role": "user", "content": "Write a long story about a lighthouse."}]
        first = llm.create_chat_completion(chat, max_tokens=120, ignore_eos=True)
        assert first["usage"]["completion_tokens"] == 120
        for _ in range(2):
            again = llm.create_chat_completion(chat, max_tokens=120, ignore_eos=True)
            usage = again["usage"]
            assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
        engine = llm._require_engine()
        held = [len(engine.cached_tokens(i)) for i in range(4)]
        assert sorted(held) == [0, 0, 0, usage["prompt_tokens"] + 119], held
        other = [{"role": "user", "content": "Write a long story about a fox."}]
        llm.create_chat_completion(other, max_tokens=1)
        kept = held.index(max(held))
        assert len(engine.cached_tokens(kept)) == held[kept]
