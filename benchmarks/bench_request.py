#!/usr/bin/env python3
"""The engine owns the request: what the adapters, the chat layer, streaming, embeddings and a
second engine cost a generation, measured side by side in one run.

1. Adapter and chat overhead: tokens/s of ``ChatLlamaCpp.invoke``, ``ChatLlamaCpp.ainvoke`` and
   ``Llama.create_chat_completion`` over ``Llama.create_completion`` on the same rendered prompt,
   256 generated tokens (EOS ignored), greedy and sampled; alternating rounds, median ratio.
2. Wakeups: how many times the engine woke the waiter of a non-streaming 256-token request
   (sync, async, LangChain) and of a streamed one (``Request.wakeups``, counted natively).
3. Streaming: a 2048-token chat reply and a tool call with ~1000 characters of arguments,
   streamed over not streamed (median of alternating rounds).
4. Embeddings beside generation: aggregate tokens/s of 4 generating requests (128 tokens each)
   while 64 texts are embedded, over the same without; and the cached tokens of the 4 slots
   afterwards.
5. Several engines: tokens/s (64 greedy tokens) of one engine alone, after an embedding engine
   in the same process was used, alternating with a second chat engine, and two engines
   generating at once; llama-cpp-python's figure for the same steps when it is installed
   (each side in its own fresh process).

    python benchmarks/bench_request.py [--threads 2] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

RESULT = "RESULT "
STORY = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
LONG_TOOL = {
    "type": "function",
    "function": {
        "name": "save_note",
        "description": "Save a long note.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 1000, "maxLength": 1100}},
            "required": ["text"],
        },
    },
}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def alternate(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Runs each timed function once per round, the order reversed every other round."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else reversed(names):
            out[n].append(fns[n]())
    return out


# --------------------------------------------------------------------------- 1 and 2


def overhead(model: str, threads: int, rounds: int, n_tokens: int) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage

    from llamacpp_integrations import Llama
    from llamacpp_integrations.langchain import ChatLlamaCpp

    llm = Llama(model_path=model, n_ctx=1024, n_threads=threads, n_seq_max=1)
    prompt_tokens = list(llm.chat_templates.apply(json.dumps(STORY)).tokens)
    results: dict[str, Any] = {}
    for mode, temperature in (("greedy", 0.0), ("sampled", 0.8)):
        common = {"max_tokens": n_tokens, "temperature": temperature, "ignore_eos": True, "seed": 7}
        chat_model = ChatLlamaCpp(client=llm, max_tokens=n_tokens, temperature=temperature)
        per_call = {"ignore_eos": True, "seed": 7}
        question = [HumanMessage(STORY[0]["content"])]

        def rate(fn: Callable[[], Any]) -> float:
            llm.reset()  # every call decodes its prompt: the same work each time
            t0 = time.perf_counter()
            fn()
            return n_tokens / (time.perf_counter() - t0)

        fns = {
            "create_completion": lambda: rate(
                lambda: llm.create_completion(prompt_tokens, **common)  # noqa: B023
            ),
            "create_chat_completion": lambda: rate(
                lambda: llm.create_chat_completion(STORY, **common)  # noqa: B023
            ),
            "ChatLlamaCpp.invoke": lambda: rate(
                lambda: chat_model.invoke(question, **per_call)  # noqa: B023
            ),
            "ChatLlamaCpp.ainvoke": lambda: rate(
                lambda: asyncio.run(chat_model.ainvoke(question, **per_call))  # noqa: B023
            ),
        }
        fns["create_completion"]()  # warm-up
        samples = alternate(fns, rounds)
        base = median(samples["create_completion"])
        results[mode] = {
            name: {"tokens_per_s": median(v), "ratio": median(v) / base}
            for name, v in samples.items()
        }

    wake: dict[str, int] = {}
    h = llm.submit_completion(prompt_tokens, max_tokens=n_tokens, ignore_eos=True, temperature=0)
    h.response()
    wake["completion, sync"] = h._request.wakeups
    c = llm.submit_chat_completion(STORY, max_tokens=n_tokens, ignore_eos=True, temperature=0)
    c.response()
    wake["chat, sync"] = c._request.wakeups

    async def chat_async() -> int:
        a = llm.submit_chat_completion(STORY, max_tokens=n_tokens, ignore_eos=True, temperature=0)
        await a.aresponse()
        return int(a._request.wakeups)

    wake["chat, async"] = asyncio.run(chat_async())
    s = llm.submit_chat_completion(
        STORY, max_tokens=n_tokens, ignore_eos=True, temperature=0, stream=True
    )
    chunks = len(list(s))
    wake[f"chat, streamed ({chunks} chunks)"] = s._request.wakeups
    results["wakeups"] = wake
    llm.close()
    return results


# --------------------------------------------------------------------------- 3


def streaming(model: str, threads: int, rounds: int, n_tokens: int) -> dict[str, Any]:
    from llamacpp_integrations import Llama

    llm = Llama(model_path=model, n_ctx=n_tokens + 256, n_threads=threads, n_seq_max=1)
    story = {"max_tokens": n_tokens, "ignore_eos": True, "temperature": 0}
    tool = {"tools": [LONG_TOOL], "tool_choice": "required", "temperature": 0, "max_tokens": 1800}
    out: dict[str, Any] = {}
    for name, kwargs in (("reply", story), ("tool call", tool)):

        def timed(stream: bool, kwargs: dict[str, Any] = kwargs) -> float:
            llm.reset()
            t0 = time.perf_counter()
            r = llm.create_chat_completion(STORY, stream=stream, **kwargs)
            if stream:
                for _ in r:  # type: ignore[union-attr]
                    pass
            return time.perf_counter() - t0

        timed(False)
        samples = alternate(
            {"streamed": lambda: timed(True), "whole": lambda: timed(False)}, rounds
        )
        out[name] = {
            "streamed_s": median(samples["streamed"]),
            "whole_s": median(samples["whole"]),
            "ratio": median(samples["streamed"]) / median(samples["whole"]),
        }
    last = llm.create_chat_completion(STORY, **tool)
    assert isinstance(last, dict)
    out["tool call"]["argument_chars"] = len(
        last["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    )
    llm.close()
    return out


# --------------------------------------------------------------------------- 4


def embeddings_beside(model: str, threads: int, rounds: int) -> dict[str, Any]:
    from llamacpp_integrations import Llama

    llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_seq_max=4)
    texts = [
        f"Document {i}: " + "the lighthouse keeper wrote in his log every night. " * 3
        for i in range(64)
    ]
    convs = [
        [{"role": "user", "content": f"Conversation {i}: describe the sea."}] for i in range(4)
    ]

    def generate(embed: bool) -> float:
        handles = [
            llm.submit_chat_completion(c, max_tokens=128, ignore_eos=True, temperature=0)
            for c in convs
        ]
        t0 = time.perf_counter()
        embedder = threading.Thread(target=llm.embed, args=(texts,))
        if embed:
            embedder.start()
        n = sum(h.response()["usage"]["completion_tokens"] for h in handles)
        elapsed = time.perf_counter() - t0
        if embed:
            embedder.join()
        return n / elapsed

    generate(False)
    samples = alternate(
        {"alone": lambda: generate(False), "embedding": lambda: generate(True)}, rounds
    )
    # the slots' caches after embedding: each conversation's next turn reads its prompt from cache
    cached = []
    for c in convs:
        out = llm.create_chat_completion(c, max_tokens=1, temperature=0)
        cached.append(out["usage"]["prompt_tokens_details"]["cached_tokens"])  # type: ignore[index]
    llm.embed(texts)
    after = []
    for c in convs:
        out = llm.create_chat_completion(c, max_tokens=1, temperature=0)
        after.append(out["usage"]["prompt_tokens_details"]["cached_tokens"])  # type: ignore[index]
    llm.close()
    return {
        "alone_tps": median(samples["alone"]),
        "embedding_tps": median(samples["embedding"]),
        "ratio": median(samples["embedding"]) / median(samples["alone"]),
        "cached_before_embed": cached,
        "cached_after_embed": after,
    }


# --------------------------------------------------------------------------- 5


def engines_child(engine: str, model: str, threads: int, reps: int) -> dict[str, float]:
    """In a fresh process: tokens/s of 64 greedy tokens, alone and with a second engine."""
    prompt = "The history of computing is a story of"
    if engine == "ours":
        from llamacpp_integrations import Llama

        def make(embedding: bool = False) -> Any:
            return Llama(model_path=model, n_ctx=512, n_threads=threads, embedding=embedding)

        def gen(m: Any) -> float:
            m.reset()
            t0 = time.perf_counter()
            out = m.create_completion(prompt, max_tokens=64, temperature=0, ignore_eos=True)
            return out["usage"]["completion_tokens"] / (time.perf_counter() - t0)

        def embed(m: Any) -> None:
            m.embed(["a text to embed", "another one"])
    else:
        import llama_cpp

        def make(embedding: bool = False) -> Any:
            return llama_cpp.Llama(
                model_path=model, n_ctx=512, n_threads=threads, embedding=embedding, verbose=False
            )

        def gen(m: Any) -> float:
            m.reset()
            t0 = time.perf_counter()
            out = m.create_completion(prompt, max_tokens=64, temperature=0, logit_bias={})
            return out["usage"]["completion_tokens"] / (time.perf_counter() - t0)

        def embed(m: Any) -> None:
            m.embed(["a text to embed", "another one"])

    a = make()
    gen(a)
    alone = median([gen(a) for _ in range(reps)])
    e = make(embedding=True)
    embed(e)
    after_embed = median([gen(a) for _ in range(reps)])
    b = make()
    gen(b)
    alternating = median([x for _ in range(reps) for x in (gen(a), gen(b))])
    both: list[float] = []
    if engine == "ours":  # llama-cpp-python cannot decode two models from two threads at once
        for _ in range(reps):
            t0 = time.perf_counter()
            ts = [threading.Thread(target=gen, args=(m,)) for m in (a, b)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            both.append(128 / (time.perf_counter() - t0))
    return {
        "alone": alone,
        "after_embedding_engine": after_embed,
        "alternating_two_chat_engines": alternating,
        "two_at_once_combined": median(both) if both else float("nan"),
    }


def engines(model: str, threads: int, reps: int, rounds: int) -> dict[str, Any]:
    """Each round starts a fresh process per engine kind (alternating order); the figures are
    the medians over rounds of tokens/s and of each ratio to the same process's alone figure."""
    names = ["ours"]
    try:
        import llama_cpp  # noqa: F401

        names.append("llama-cpp-python")
    except ImportError:
        pass
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            cmd = [sys.executable, __file__, "--child", name, "--model", model]
            cmd += ["--threads", str(threads), "--reps", str(reps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            line = next(x for x in proc.stdout.splitlines() if x.startswith(RESULT))
            samples[name].append(json.loads(line[len(RESULT) :]))
    out: dict[str, Any] = {}
    for name, runs in samples.items():
        out[name] = {"alone": median([x["alone"] for x in runs])}
        for key in runs[0]:
            if key != "alone":
                out[name][key] = median([x[key] / x["alone"] for x in runs])
        out[name]["rounds"] = runs
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="shorter generations (a smoke run)")
    p.add_argument("--only", choices=["overhead", "streaming", "embeddings", "engines"])
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model is None:
        from llamacpp_integrations import default_model_path

        args.model = default_model_path()
    if args.child:
        result = engines_child(args.child, args.model, args.threads, args.reps)
        print(RESULT + json.dumps(result))
        return

    n_over, n_stream = (64, 256) if args.quick else (256, 2048)
    report: dict[str, Any] = {}
    if args.only in (None, "overhead"):
        report["overhead"] = overhead(args.model, args.threads, args.rounds, n_over)
        for mode in ("greedy", "sampled"):
            print(
                f"\n1. adapter/chat overhead, {n_over} tokens, {mode} (ratio to create_completion)"
            )
            for name, r in report["overhead"][mode].items():
                print(f"   {name:24s} {r['tokens_per_s']:7.1f} t/s  {r['ratio']:.3f}x")
        print(f"\n2. engine wakeups of the waiter, {n_over} tokens")
        for name, n in report["overhead"]["wakeups"].items():
            print(f"   {name:34s} {n}")
    if args.only in (None, "streaming"):
        report["streaming"] = streaming(args.model, args.threads, args.rounds, n_stream)
        print("\n3. streamed over not streamed (time)")
        for name, r in report["streaming"].items():
            extra = f", {r['argument_chars']} argument chars" if "argument_chars" in r else ""
            print(
                f"   {name:10s} streamed {r['streamed_s']:.2f} s, whole {r['whole_s']:.2f} s,"
                f" {r['ratio']:.3f}x{extra}"
            )
    if args.only in (None, "embeddings"):
        r = report["embeddings"] = embeddings_beside(args.model, args.threads, args.rounds)
        print("\n4. 4 generating requests while 64 texts are embedded")
        print(
            f"   alone {r['alone_tps']:.1f} t/s, while embedding {r['embedding_tps']:.1f} t/s,"
            f" {r['ratio']:.3f}x; cached prompt tokens per conversation before/after an embed:"
            f" {r['cached_before_embed']} / {r['cached_after_embed']}"
        )
    if args.only in (None, "engines"):
        r = report["engines"] = engines(args.model, args.threads, args.reps, args.rounds)
        print(
            f"\n5. several engines in one process (64 greedy tokens; {args.rounds} rounds of fresh"
            " processes; median t/s alone, median ratio to alone)"
        )
        for name, v in r.items():
            print(f"   {name}: alone {v['alone']:.1f} t/s")
            for k, ratio in v.items():
                if k not in ("alone", "rounds"):
                    shown = "n/a" if ratio != ratio else f"{ratio:.3f}x"  # NaN: not measurable
                    print(f"      {k:30s} {shown}")
    print("\n" + RESULT + json.dumps(report))


if __name__ == "__main__":
    main()
