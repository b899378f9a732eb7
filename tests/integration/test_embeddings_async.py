"""Core embeddings and asyncio API of ``Llama``: real model, real event loop."""

from __future__ import annotations

import asyncio
import math

import pytest
from loop_lag import LoopLag

from llamacpp_integrations import InvalidParameterError, Llama

pytestmark = pytest.mark.integration


def test_embed_shapes_batching_and_normalisation(llm: Llama) -> None:
    texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Stocks fell."]
    batch = llm.embed(texts, normalize=True)
    assert len(batch) == 3 and all(len(v) == llm.n_embd() for v in batch)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in batch)
    alone = llm.embed(texts[1], normalize=True)
    assert max(abs(a - b) for a, b in zip(alone, batch[1], strict=True)) < 1e-4
    raw = llm.embed(texts[0])
    assert not math.isclose(sum(x * x for x in raw), 1.0, rel_tol=1e-2)
    resp = llm.create_embedding(texts[:2])
    assert resp["object"] == "list" and [d["index"] for d in resp["data"]] == [0, 1]
    assert resp["usage"]["prompt_tokens"] == sum(len(llm.tokenize(t)) for t in texts[:2])
    _, count = llm.embed(texts, return_count=True)
    assert count == resp["usage"]["prompt_tokens"] + len(llm.tokenize(texts[2]))


def test_embedding_leaves_generation_intact(llm: Llama) -> None:
    llm.reset()
    before = llm("The capital of France is", max_tokens=6, temperature=0)["choices"][0]["text"]
    llm.embed(["one text", "another text"])
    after = llm("The capital of France is", max_tokens=6, temperature=0)["choices"][0]["text"]
    assert before == after


def test_embed_bad_input_raises(llm: Llama) -> None:
    with pytest.raises(InvalidParameterError, match="empty"):
        llm.embed(["fine", ""])
    with pytest.raises(InvalidParameterError, match="str"):
        llm.embed([b"bytes"])  # type: ignore[list-item]
    long_text = "word " * (llm.native_engine.n_embed_max + 10)
    with pytest.raises(InvalidParameterError, match="at most"):
        llm.embed(long_text, truncate=False)
    assert len(llm.embed(long_text)) == llm.n_embd()  # truncated by default


async def test_async_completion_chat_and_streams(llm: Llama) -> None:
    llm.reset()
    sync = llm("The capital of France is", max_tokens=8, temperature=0)
    out = await llm.acreate_completion("The capital of France is", max_tokens=8, temperature=0)
    assert out["choices"][0]["text"] == sync["choices"][0]["text"]  # type: ignore[index]
    stream = await llm.acreate_completion("One, two,", max_tokens=8, temperature=0, stream=True)
    pieces = [c["choices"][0]["text"] async for c in stream]  # type: ignore[union-attr]
    assert "".join(pieces)
    chat = await llm.acreate_chat_completion(
        [{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0
    )
    assert chat["choices"][0]["message"]["content"]  # type: ignore[index]


async def test_event_loop_keeps_ticking_and_cancel_stops_generation(
    llm: Llama, loop_lag: LoopLag
) -> None:
    async with loop_lag:
        results = await asyncio.gather(
            *[llm.acreate_completion(f"Count: {i},", max_tokens=24) for i in range(4)]
        )
    assert all(r["choices"][0]["finish_reason"] in ("stop", "length") for r in results)  # type: ignore[index]
    assert len(loop_lag.lags) > 10 and loop_lag.worst < 0.25

    # acreate_completion is submit_completion + aresponse(): cancel the task that awaits it
    handle = llm.submit_completion("Once upon a time", max_tokens=2000, ignore_eos=True)
    task = asyncio.create_task(handle.aresponse())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the generation itself stopped (it would go on to 2000 tokens, or end with "length")
    native = handle._request
    assert await asyncio.to_thread(native.wait, 60) and native.done
    assert native.result().finish_reason == "cancelled"
    assert native.result().n_completion < 1000
    await llm.acreate_completion("Hi", max_tokens=2)


def test_dry_sampler_breaks_a_loop(llm: Llama) -> None:
    prompt = [{"role": "user", "content": "Tell me a joke about cats."}]
    schema = {
        "type": "object",
        "properties": {"setup": {"type": "string"}, "punchline": {"type": "string"}},
        "required": ["setup", "punchline"],
    }
    fmt = {"type": "json_schema", "json_schema": {"schema": schema}}
    outs = {}
    for dry in (0.0, 0.8):
        llm.reset()
        r = llm.create_chat_completion(
            prompt, response_format=fmt, temperature=0, max_tokens=120, dry_multiplier=dry
        )
        outs[dry] = r["choices"][0]["finish_reason"]  # type: ignore[index]
    assert outs[0.8] == "stop"
    with pytest.raises(InvalidParameterError, match="dry_multiplier"):
        llm.create_completion("x", dry_multiplier=-1)
