"""Completion behaviour on the real default model."""

from __future__ import annotations

import math

import pytest

from llamacpp_integrations import CompletionStream, Llama

PLANETS = "Q: Name the planets in the solar system? A: "


def text_of(out: object) -> str:
    assert isinstance(out, dict)
    return str(out["choices"][0]["text"])


def test_the_classic_example_works_as_written(model_path: str) -> None:
    llm = Llama(model_path=model_path)
    out = llm(PLANETS, max_tokens=32, stop=["Q:", "\n"], echo=True)
    assert out["object"] == "text_completion"
    choice = out["choices"][0]
    assert choice["text"].startswith(PLANETS)
    assert "\n" not in choice["text"] and "Q:" not in choice["text"][len(PLANETS) :]
    assert choice["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(llm.tokenize(PLANETS))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    llm.close()


def test_greedy_output_is_identical_across_runs(llm: Llama) -> None:
    runs = {
        text_of(llm("The three primary colors are", max_tokens=24, temperature=0)) for _ in range(3)
    }
    assert len(runs) == 1
    llm.reset()  # and with a cold cache
    assert text_of(llm("The three primary colors are", max_tokens=24, temperature=0)) in runs


def test_seeded_sampling_is_reproducible(llm: Llama) -> None:
    a = text_of(llm("Write a word:", max_tokens=16, temperature=1.0, seed=7))
    b = text_of(llm("Write a word:", max_tokens=16, temperature=1.0, seed=7))
    assert a == b


def test_streaming_text_equals_non_streaming_text(llm: Llama) -> None:
    prompt = "Here is a short story about a robot:"
    full = llm(prompt, max_tokens=48, temperature=0)
    stream = llm(prompt, max_tokens=48, temperature=0, stream=True)
    assert isinstance(stream, CompletionStream)
    chunks = list(stream)
    assert len(chunks) > 10  # really streamed, one piece at a time
    assert "".join(c["choices"][0]["text"] for c in chunks) == text_of(full)
    assert chunks[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == full["usage"]["completion_tokens"]


def test_max_tokens_and_usage_counts(llm: Llama) -> None:
    out = llm("Count: one, two,", max_tokens=10, temperature=0, ignore_eos=True)
    assert out["usage"]["completion_tokens"] == 10
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["prompt_tokens"] == len(llm.tokenize("Count: one, two,"))


def test_stop_string_split_across_tokens_is_never_emitted(llm: Llama) -> None:
    prompt = "The planets of the solar system are"
    free = text_of(llm(prompt, max_tokens=40, temperature=0))
    # a stop string that starts in the middle of one token and ends in a later one
    words = free.split()
    assert len(words) > 4
    target = words[3]
    start = free.index(target)
    stop = free[start + 1 : start + len(target) + 3]
    assert len(stop) >= 3
    cut = free.index(stop)
    out = llm(prompt, max_tokens=40, temperature=0, stop=[stop])
    assert text_of(out) == free[:cut]
    assert out["choices"][0]["finish_reason"] == "stop"
    streamed = "".join(
        c["choices"][0]["text"]
        for c in llm(prompt, max_tokens=40, temperature=0, stop=stop, stream=True)
    )
    assert streamed == free[:cut]


def test_echo_puts_the_prompt_first(llm: Llama) -> None:
    out = llm("Hello, my name is", max_tokens=5, temperature=0, echo=True)
    assert text_of(out).startswith("Hello, my name is")
    chunks = list(llm("Hello, my name is", max_tokens=5, temperature=0, echo=True, stream=True))
    assert chunks[0]["choices"][0]["text"] == "Hello, my name is"
    assert "".join(c["choices"][0]["text"] for c in chunks) == text_of(out)


def test_multibyte_characters_are_never_split(llm: Llama) -> None:
    # the grammar forces characters the tokenizer spells with several byte tokens
    grammar = 'root ::= ("日本語" | "🎉" | "é" | "ß")+'
    full = llm("Say something:", max_tokens=24, temperature=0, grammar=grammar)
    text = text_of(full)
    assert text and set(text) <= set("日本語🎉éß")
    chunks = [
        c["choices"][0]["text"]
        for c in llm("Say something:", max_tokens=24, temperature=0, grammar=grammar, stream=True)
    ]
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == text


def test_logprobs(llm: Llama) -> None:
    out = llm("The capital of France is", max_tokens=6, temperature=0, logprobs=3)
    lp = out["choices"][0]["logprobs"]
    assert lp is not None
    n = out["usage"]["completion_tokens"]
    assert (
        len(lp["tokens"])
        == len(lp["token_logprobs"])
        == len(lp["top_logprobs"])
        == len(lp["text_offset"])
        == n
    )
    assert "".join(lp["tokens"]) == text_of(out)
    for token, logprob, top in zip(
        lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True
    ):
        assert logprob is not None and logprob <= 0.0
        assert top is not None and 1 <= len(top) <= 3
        # greedy: the chosen token is the most likely one
        assert max(top.values()) == pytest.approx(logprob, abs=1e-4)
        assert token in top
        # log-softmax over the whole vocabulary: the alternatives' probabilities sum to <= 1
        assert 0.0 < sum(math.exp(v) for v in top.values()) <= 1.0 + 1e-4
    offsets = lp["text_offset"]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_logprobs_with_echo_cover_the_prompt(llm: Llama) -> None:
    prompt = "One two three"
    out = llm(prompt, max_tokens=3, temperature=0, logprobs=1, echo=True)
    lp = out["choices"][0]["logprobs"]
    n_prompt = len(llm.tokenize(prompt))
    assert len(lp["tokens"]) == n_prompt + out["usage"]["completion_tokens"]
    assert lp["token_logprobs"][0] is None  # nothing predicts the first token
    assert all(v is not None for v in lp["token_logprobs"][1:])


def test_prefix_reuse_is_visible_in_usage(llm: Llama) -> None:
    system = "You are a helpful assistant. Answer in one short sentence. " * 8
    first = llm(system + "Question: what is 2+2?", max_tokens=4, temperature=0)
    second = llm(system + "Question: what colour is the sky?", max_tokens=4, temperature=0)
    n_system = len(llm.tokenize(system))
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= n_system - 1
    assert second["timings"]["prompt_n"] == second["usage"]["prompt_tokens"] - cached
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] < cached


def test_token_ids_as_prompt(llm: Llama) -> None:
    # both from a cold cache: greedy output can depend on how the prompt was split into decodes
    tokens = llm.tokenize("The sun is")
    llm.reset()
    from_ids = text_of(llm(tokens, max_tokens=8, temperature=0))
    llm.reset()
    assert from_ids == text_of(llm("The sun is", max_tokens=8, temperature=0))


def test_tokenize_detokenize_round_trip(llm: Llama) -> None:
    text = "Hello wörld — 日本語 🎉"
    tokens = llm.tokenize(text, add_bos=False)
    assert llm.detokenize(tokens).decode() == text
    assert (
        llm.detokenize(tokens[3:], prev_tokens=tokens[:3])
        == llm.detokenize(tokens)[len(llm.detokenize(tokens[:3])) :]
    )


def test_model_facts(llm: Llama) -> None:
    assert llm.n_ctx() == 2048
    assert llm.n_vocab() == 49152
    assert llm.metadata["general.architecture"] == "llama"
    assert "im_start" in llm.native_model.chat_template()


def test_grammar_path(llm: Llama, tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    g = tmp_path / "yesno.gbnf"
    g.write_text('root ::= "yes" | "no"\n')
    out = llm("Is the sky blue? Answer:", max_tokens=4, temperature=0, grammar_path=str(g))
    assert text_of(out) in ("yes", "no")


def test_save_and_load_state(llm: Llama, model_path: str) -> None:
    prompt = "A long shared prefix for the state test. " * 6
    llm(prompt, max_tokens=2, temperature=0)
    state = llm.save_state()
    with Llama(model_path=model_path, n_ctx=2048) as other:
        other.load_state(state)
        out = other(prompt + "Next", max_tokens=2, temperature=0)
        assert (
            out["usage"]["prompt_tokens_details"]["cached_tokens"]
            >= len(other.tokenize(prompt)) - 1
        )


def test_two_instances_share_one_loaded_model(model_path: str) -> None:
    a = Llama(model_path=model_path, n_ctx=256)
    b = Llama(model_path=model_path, n_ctx=512)
    assert a.native_model is b.native_model
    a.close()
    b.close()
