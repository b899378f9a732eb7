"""Speculative decoding: drafts verified in the scheduler's decode change how many tokens a decode
yields, never which tokens come out.

Most tests verify every draft (``draft_always=True``) so that verification runs as often as it
can; the default policy verifies only drafts worth their cost. Contexts stay under 256 tokens:
from 256 on, llama.cpp's CPU attention sums a one-token decode in another order than a decode of
several tokens (its split-KV path), so near-tied greedy choices could differ in the last bits.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from chat_data import WEATHER
from engine_source import engine_models_dir
from test_server import Server

from llamacpp_integrations import InvalidParameterError, Llama

pytestmark = pytest.mark.integration

# Four workloads, 20 prompts each: copying from the prompt (quoting, extraction, rewriting) and
# free writing, where n-gram drafts rarely hit.
FACTS = [
    "The river Elbe rises in the Krkonose mountains and flows 1,094 kilometres to the North Sea.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
    "The Moon is 384,400 kilometres from the Earth and takes 27.3 days to orbit it.",
    "Mount Kilimanjaro in Tanzania is 5,895 metres high, the tallest mountain in Africa.",
    "The first telephone call was made by Alexander Graham Bell on 10 March 1876.",
]
PEOPLE = [
    ("Anna Berg", "anna.berg@example.com", "12 Lake Road, Oslo"),
    ("Tom Reyes", "tom.reyes@example.org", "4 Hill Street, Austin"),
    ("Li Wei", "li.wei@example.net", "88 River Lane, Suzhou"),
    ("Sara Khan", "sara.khan@example.com", "3 Park Avenue, Leeds"),
    ("Jon Holt", "jon.holt@example.org", "9 Mill Close, Cork"),
]
TOPICS = ["a lighthouse", "a red fox", "an old clock", "the first snow", "a lost key",
          "a paper boat", "a quiet library", "a desert well", "a robot", "a kite"]  # fmt: skip


def workload(name: str) -> list[list[dict[str, str]]]:
    if name == "rag":
        return [
            [{"role": "user", "content": f"Context: {f}\nQuote the context, then say {q}."}]
            for f in FACTS
            for q in ("why it matters", "one more fact", "who cares", "where it is")
        ]
    if name == "json":
        return [
            [{"role": "user", "content": f"{n}, {e}, {a}.\nAs JSON with name, email, address{x}:"}]
            for n, e, a in PEOPLE
            for x in ("", " and city", " and a note", " and country")
        ]
    if name == "rewrite":
        return [
            [{"role": "user", "content": f"Rewrite with '{w}' added: {f}"}]
            for f in FACTS
            for w in ("famous", "old", "great", "known")
        ]
    return [
        [{"role": "user", "content": f"Write a {k} story about {t}."}]
        for t in TOPICS
        for k in ("short", "sad")
    ]


@pytest.fixture(scope="module")
def plain(model_path: str) -> Iterator[Llama]:
    with Llama(model_path=model_path, n_ctx=512, n_seq_max=4) as llm:
        yield llm


@pytest.fixture(scope="module")
def spec(model_path: str) -> Iterator[Llama]:
    with Llama(
        model_path=model_path, n_ctx=512, n_seq_max=4, speculative="ngram", draft_always=True
    ) as llm:
        yield llm


def chat(llm: Llama, messages: list[dict[str, str]], cold: bool = True, **kwargs: Any) -> Any:
    """A reply from a cold cache: a prompt read whole and the same prompt found in the cache
    compute its last token in batches of different sizes, which can flip near-tied greedy
    choices with or without drafts (so every comparison here starts cold)."""
    if cold:
        llm.reset()
    kwargs = {"max_tokens": 48, "temperature": 0, **kwargs}
    return llm.create_chat_completion(messages, **kwargs)


def text(out: dict[str, Any]) -> str:
    return str(out["choices"][0]["message"]["content"])


@pytest.mark.parametrize("name", ["rag", "json", "rewrite", "story"])
def test_greedy_output_is_the_same_with_and_without_drafts(
    plain: Llama, spec: Llama, name: str
) -> None:
    drafted = accepted = 0
    for messages in workload(name):
        want, got = chat(plain, messages), chat(spec, messages)
        assert text(got) == text(want), messages
        assert got["usage"]["prompt_tokens"] + got["usage"]["completion_tokens"] < 256
        drafted += got["timings"]["draft_n"]
        accepted += got["timings"]["draft_n_accepted"]
        details = got["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] == got["timings"]["draft_n_accepted"]
        assert details["rejected_prediction_tokens"] == (
            got["timings"]["draft_n"] - got["timings"]["draft_n_accepted"]
        )
    # the drafts were verified, and (copying or not) some were right and some wrong
    assert 0 < accepted < drafted, (name, accepted, drafted)


def test_seeded_sampling_is_the_same_with_and_without_drafts(plain: Llama, spec: Llama) -> None:
    """Each position is sampled once, from the same logits with the same random draw, whether it
    was drafted or not: the sampled text is the one without speculation."""
    for messages in workload("rewrite")[:6]:
        kwargs = {"temperature": 0.7, "seed": 42}
        got = chat(spec, messages, **kwargs)
        assert text(got) == text(chat(plain, messages, **kwargs))
        assert got["timings"]["draft_n"] > 0


def test_streaming_equals_non_streaming_with_drafts(spec: Llama) -> None:
    for messages in workload("rewrite")[:5] + workload("json")[:5]:
        whole = chat(spec, messages)
        chunks = list(chat(spec, messages, stream=True))
        streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert streamed == text(whole)
        assert whole["timings"]["draft_n_accepted"] > 0


def test_grammar_and_tool_calls_with_drafts(plain: Llama, spec: Llama) -> None:
    # bounded strings, so that the object closes within max_tokens whatever the CPU's rounding
    # makes of this small model's choices (unbounded, it can repeat a word inside a string)
    short = {"type": "string", "maxLength": 24}
    schema = {
        "type": "object",
        "properties": {"name": short, "email": short},
        "required": ["name", "email"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    for messages in workload("json")[:4]:
        got = chat(spec, messages, response_format=fmt, max_tokens=80)
        assert text(got) == text(chat(plain, messages, response_format=fmt, max_tokens=80))
        assert set(json.loads(text(got))) == {"name", "email"}
        assert got["timings"]["draft_n"] > 0
    ask = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
    tool_kwargs: dict[str, Any] = {"tools": [WEATHER], "tool_choice": "required"}
    got = chat(spec, ask, max_tokens=64, **tool_kwargs)
    want = chat(plain, ask, max_tokens=64, **tool_kwargs)
    call = got["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call == want["choices"][0]["message"]["tool_calls"][0]["function"]
    assert isinstance(json.loads(call["arguments"]), dict)


def test_logprobs_and_stop_strings_with_drafts(plain: Llama, spec: Llama) -> None:
    for messages in workload("rewrite")[4:8]:
        kwargs: dict[str, Any] = {"logprobs": True, "top_logprobs": 2}
        got, want = chat(spec, messages, **kwargs), chat(plain, messages, **kwargs)
        assert got["choices"][0]["logprobs"] == want["choices"][0]["logprobs"]
        assert got["timings"]["draft_n_accepted"] > 0
        # a stop string inside an accepted draft ends the reply there, as without drafts
        words = text(want).split()
        stop = " ".join(words[6:8])
        got, want = chat(spec, messages, stop=[stop]), chat(plain, messages, stop=[stop])
        assert text(got) == text(want) and stop not in text(got)
        assert got["choices"][0]["finish_reason"] == "stop"


def test_cancel_mid_draft_frees_the_slot_and_its_cells(spec: Llama) -> None:
    messages = workload("rewrite")[0]
    stream = chat(spec, messages, stream=True, max_tokens=400, ignore_eos=True)
    for seen, _ in enumerate(stream, 1):
        if seen == 40:
            break
    native = stream._request  # type: ignore[attr-defined]
    stream.close()  # type: ignore[attr-defined]
    assert native.wait(60)
    result = native.result()
    assert result.finish_reason == "cancelled"
    assert result.timings.draft_accepted_n > 0  # it was drafting when it stopped
    assert result.n_completion < 400
    # the slot's cache holds what it decoded and nothing of the rejected drafts: the engine goes
    # on serving, with the output of one that never drafted
    after = workload("rag")[0]
    with Llama(spec.model_path, n_ctx=512) as fresh:
        assert text(chat(spec, after)) == text(chat(fresh, after))


def test_four_concurrent_requests_with_drafts_do_not_cross(spec: Llama) -> None:
    prompts = [workload(name)[i] for name in ("rag", "json", "rewrite", "story") for i in (1, 2)]
    alone = []
    for messages in prompts:
        spec.reset()
        alone.append(text(chat(spec, messages)))
    for start in (0, 4):
        spec.reset()
        barrier = threading.Barrier(4)

        def run(messages: list[dict[str, str]], barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            return text(chat(spec, messages, cold=False))

        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(run, prompts[start : start + 4]))
        assert together == alone[start : start + 4]


def test_the_cost_policy_keeps_the_output_and_verifies_fewer_drafts(
    model_path: str, plain: Llama, spec: Llama
) -> None:
    """The default policy verifies a draft only when its expected yield beats what the extra
    rows cost on this machine; what it leaves unverified it still compares with the output."""
    stories = workload("story")[:10]
    with Llama(model_path=model_path, n_ctx=512, speculative="ngram") as llm:
        # what the policy weighs: decodes of 1, 2, 4, 8, 16 and draft_max + 1 rows, measured
        costs = llm.native_engine.decode_costs
        assert [rows for rows, _ in costs] == [1, 2, 4, 8, 16, 17]
        assert all(ms > 0 for _, ms in costs)
        assert spec.native_engine.decode_costs == []  # verifying every draft weighs nothing
        for messages in workload("rewrite")[:5] + stories:
            assert text(chat(llm, messages)) == text(chat(plain, messages))
        by_policy = sum(chat(llm, m)["timings"]["draft_n"] for m in stories)
    always = sum(chat(spec, m)["timings"]["draft_n"] for m in stories)
    assert by_policy < always, (by_policy, always)


def test_ngram_drafts_from_the_passage_that_agrees_longest(model_path: str, plain: Llama) -> None:
    """A sentence repeated, and a distractor that shares its words around the point where the
    prompt stops: llama.cpp's ngram-simple drafts from the latest place its last 3 tokens
    occurred (the distractor), "ngram" from the place that agrees longest (the sentence). The
    reply ends inside a verified draft, whose counts must still be reported."""
    sentence = "the quick brown fox jumps over the lazy dog near the river bank at dawn"
    distractor = "a lazy dog near the old barn sleeps all day long in the warm sun"
    prompt = f"{sentence}. {distractor}. {sentence}. {distractor}. " + sentence[:43]
    want = plain(prompt, max_tokens=12, temperature=0)["choices"][0]["text"]
    assert want.startswith(" near the river bank")
    timings = {}
    for kind in ("ngram", "ngram-simple"):
        with Llama(model_path, n_ctx=512, speculative=kind, draft_always=True) as llm:
            out = llm(prompt, max_tokens=12, temperature=0)
        assert out["choices"][0]["text"] == want
        details = out["usage"]["completion_tokens_details"]
        t = timings[kind] = out["timings"]
        assert details["accepted_prediction_tokens"] == t["draft_n_accepted"]
        assert details["rejected_prediction_tokens"] == t["draft_n"] - t["draft_n_accepted"]
    assert timings["ngram"]["draft_n"] > 0
    assert timings["ngram"]["draft_n_accepted"] == timings["ngram"]["draft_n"]
    assert timings["ngram-simple"]["draft_n_accepted"] < timings["ngram-simple"]["draft_n"]


def test_a_draft_model_with_the_same_vocabulary(model_path: str, plain: Llama) -> None:
    """The model drafting for itself: every greedy draft token is the target's own choice."""
    with Llama(
        model_path=model_path,
        n_ctx=512,
        draft_model_path=model_path,
        draft_max=6,
        draft_always=True,
    ) as llm:
        assert llm._require_engine().speculative == "draft"
        for messages in workload("story")[:3]:
            out = chat(llm, messages)
            assert text(out) == text(chat(plain, messages))
            assert out["timings"]["draft_n_accepted"] == out["timings"]["draft_n"] > 0


def test_a_draft_model_with_another_vocabulary_is_refused(model_path: str) -> None:
    other = engine_models_dir() / "ggml-vocab-llama-spm.gguf"  # llama.cpp's SPM test vocabulary
    with pytest.raises(InvalidParameterError, match=r"tokenizer types differ.*share the model's"):
        Llama(model_path=model_path, draft_model_path=other)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"speculative": "ngram-bogus"}, "speculative must be None or one of"),
        ({"speculative": "draft"}, "needs draft_model_path"),
        ({"speculative": "ngram", "draft_max": 0}, "draft_max"),
        ({"speculative": "ngram", "draft_max": 400}, r"draft_max must be in \[1, 256\]"),
        ({"speculative": "ngram", "draft_min": 20}, r"draft_min must be in \[0, draft_max\]"),
        ({"speculative": "ngram", "draft_ngram_size": 0}, "draft_ngram_size"),
    ],
)
def test_bad_speculative_settings_raise(
    model_path: str, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        Llama(model_path=model_path, n_ctx=256, **kwargs)


@pytest.mark.parametrize(
    "kind", ["ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache"]
)
def test_every_ngram_kind_keeps_greedy_output(plain: Llama, model_path: str, kind: str) -> None:
    size = 16 if kind == "ngram-mod" else 3
    with Llama(
        model_path=model_path, n_ctx=512, speculative=kind, draft_always=True, draft_ngram_size=size
    ) as llm:
        for messages in workload("rewrite")[:4]:
            assert text(chat(llm, messages)) == text(chat(plain, messages))


def test_the_server_drafts_and_reports_prediction_tokens(model_path: str, plain: Llama) -> None:
    server = Server(["--model", model_path, "--n-ctx", "512", "--n-seq-max", "2",
                     "--speculative", "ngram", "--draft-always"])  # fmt: skip
    try:
        messages = workload("rewrite")[2]
        body = {"messages": messages, "max_tokens": 48, "temperature": 0}
        out = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120).json()
        details = out["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] > 0
        assert details["rejected_prediction_tokens"] >= 0
        assert out["choices"][0]["message"]["content"] == text(chat(plain, messages))
    finally:
        server.stop()
