#!/usr/bin/env python3
"""Many requests on one model: our continuous batching against llama.cpp's own llama-server and
against llama-cpp-python, in one script, on the same model and thread count.

1. Throughput: 1, 2, 4 and 8 concurrent chat requests of 128 generated tokens each (ignore_eos,
   greedy, distinct prompts, cold caches), aggregate generated tokens per second.
   - ours: one ``Llama`` (n_seq_max=8), one thread per request;
   - llama-server (built from the same pinned source by build_reference.py): ``-np 8``,
     continuous batching, on 127.0.0.1, one HTTP client thread per request;
   - llama-cpp-python: one ``Llama``; it cannot serve two requests at once, so they run one
     after another.
2. Interleaved conversations: 4 conversations, each opening with its own ~1,000-token
   document, 6 turns each, 48 generated tokens per turn, turns alternating between the
   conversations. Total wall time, ours vs llama-cpp-python, and our time to first token on
   turn 6 against the same turn from a cold cache.
3. Event loop: the worst lag of a 10 ms asyncio ticker while 4 async generations stream.
4. Memory: resident set size after 1,000 mixed requests (completions, chats, tool calls,
   JSON-schema replies, 8 threads) against after the first 100.

Usage::

    python benchmarks/build_reference.py        # once: builds llama-server
    python benchmarks/bench_batching.py         # nothing else busy; ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / ".bench" / "llama.cpp-build" / "bin" / "llama-server"
TOPICS = ["a lighthouse", "a red fox", "an old clock", "the first snow", "a lost key",
          "a paper boat", "a quiet library", "a desert well"]  # fmt: skip


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}]


def timed_concurrent(fn: Callable[[int], int], n: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        tokens = sum(pool.map(fn, range(n)))
    return time.perf_counter() - t0, tokens


# ------------------------------------------------------------------ llama-server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, model: str, threads: int, n_ctx: int) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(SERVER), "-m", model, "-np", "8", "-c", str(n_ctx), "--kv-unified",
             "-t", str(threads), "-tb", str(threads), "-fa", "on", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-webui"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("llama-server did not start")

    def chat(self, i: int, max_tokens: int = 128) -> int:
        body = {
            "messages": messages(i), "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "cache_prompt": False,
        }  # fmt: skip
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=600) as r:
            return int(json.load(r)["usage"]["completion_tokens"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# ------------------------------------------------------------------ the benchmarks


def throughput(model: str, threads: int) -> dict[str, dict[int, float]]:
    from llamacpp_integrations import Llama

    results: dict[str, dict[int, float]] = {"ours": {}, "llama-server": {}, "llama-cpp-python": {}}
    ours = Llama(model, n_ctx=8192, n_seq_max=8, n_threads=threads, flash_attn=True)

    def ours_chat(i: int) -> int:
        out = ours.create_chat_completion(
            messages(i), max_tokens=128, temperature=0, ignore_eos=True
        )
        return int(out["usage"]["completion_tokens"])  # type: ignore[index]

    for n in (1, 2, 4, 8):
        ours.reset()
        wall, tokens = timed_concurrent(ours_chat, n)
        results["ours"][n] = tokens / wall
    ours.close()

    if SERVER.exists():
        server = Server(model, threads, 8192)
        try:
            server.chat(0, 4)  # warm up
            for n in (1, 2, 4, 8):
                wall, tokens = timed_concurrent(server.chat, n)
                results["llama-server"][n] = tokens / wall
        finally:
            server.close()

    try:
        import llama_cpp
    except ImportError:
        return results
    ref = llama_cpp.Llama(model, n_ctx=8192, n_threads=threads, flash_attn=True, verbose=False)
    lock = threading.Lock()

    def ref_chat(i: int) -> int:
        with lock:  # one request at a time: the library cannot serve two at once
            out = ref.create_chat_completion(
                messages(i), max_tokens=128, temperature=0, logit_bias={ref.token_eos(): -1e9}
            )
        return int(out["usage"]["completion_tokens"])  # type: ignore[index]

    for n in (1, 2, 4, 8):
        ref.reset()
        wall, tokens = timed_concurrent(ref_chat, n)
        results["llama-cpp-python"][n] = tokens / wall
    return results


def document(i: int) -> str:
    sentences = [
        f"Fact {k} about archive {i}: item {k * 7 + i} is stored on shelf {k % 13}."
        for k in range(60)
    ]
    return " ".join(sentences)


def streamed_text_and_ttft(start: Callable[[], Any]) -> tuple[str, float]:
    """The text of a chat stream and its time to first content token (from ``start()``)."""
    t0 = time.perf_counter()
    ttft = 0.0
    text = ""
    for chunk in start():
        delta = chunk["choices"][0]["delta"].get("content")
        if delta and not ttft:
            ttft = time.perf_counter() - t0
        text += delta or ""
    return text, ttft


def interleaved(model: str, threads: int) -> dict[str, float]:
    """4 conversations x 6 turns x 48 tokens, alternating; total time and turn-6 TTFT."""
    from llamacpp_integrations import Llama

    def run(chat: Callable[[list[dict[str, str]]], tuple[str, float]]) -> tuple[float, float]:
        convs = [
            [{"role": "system", "content": "Answer from this document.\n" + document(i)}]
            for i in range(4)
        ]
        t0 = time.perf_counter()
        last_ttft = 0.0
        for turn in range(6):
            for conv in convs:
                conv.append(
                    {"role": "user", "content": f"Question {turn}: what is on shelf {turn}?"}
                )
                text, ttft = chat(conv)
                conv.append({"role": "assistant", "content": text})
                last_ttft = ttft
        return time.perf_counter() - t0, last_ttft

    out: dict[str, float] = {}
    ours = Llama(model, n_ctx=16384, n_seq_max=4, n_threads=threads, flash_attn=True)
    n_prompt = len(ours.tokenize(document(0)))

    def ours_chat(conv: list[dict[str, str]]) -> tuple[str, float]:
        return streamed_text_and_ttft(
            lambda: ours.create_chat_completion(
                conv, max_tokens=48, temperature=0, ignore_eos=True, stream=True
            )
        )

    out["ours_total_s"], out["ours_turn6_ttft_s"] = run(ours_chat)
    # the same last turn from a cold cache
    convs = [[{"role": "system", "content": "Answer from this document.\n" + document(3)}]]
    ours.reset()
    _, out["ours_turn6_cold_ttft_s"] = ours_chat(
        convs[0] + [{"role": "user", "content": "Question 5: what is on shelf 5?"}]
    )
    out["document_tokens"] = float(n_prompt)
    ours.close()

    try:
        import llama_cpp
    except ImportError:
        return out
    ref = llama_cpp.Llama(model, n_ctx=16384, n_threads=threads, flash_attn=True, verbose=False)

    def ref_chat(conv: list[dict[str, str]]) -> tuple[str, float]:
        return streamed_text_and_ttft(
            lambda: ref.create_chat_completion(
                conv, max_tokens=48, temperature=0, stream=True, logit_bias={ref.token_eos(): -1e9}
            )
        )

    out["llama_cpp_python_total_s"], _ = run(ref_chat)
    return out


async def loop_lag(model: str, threads: int) -> float:
    from llamacpp_integrations import Llama

    llm = Llama(model, n_ctx=4096, n_seq_max=4, n_threads=threads)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t0 - 0.01)

    async def consume(i: int) -> None:
        stream = await llm.acreate_chat_completion(
            messages(i), max_tokens=128, stream=True, ignore_eos=True
        )
        async for _ in stream:  # type: ignore[union-attr]
            pass

    task = asyncio.create_task(ticker())
    await asyncio.gather(*(consume(i) for i in range(4)))
    task.cancel()
    llm.close()
    return max(lags)


def memory_growth(model: str, threads: int) -> tuple[float, float]:
    """RSS (MB) after the first 100 and after 1,000 mixed requests from 8 threads."""
    from llamacpp_integrations import Llama

    def rss_mb() -> float:
        try:
            with open("/proc/self/status") as f:  # Linux, no dependency
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            return kb / 1e3
        except OSError:
            import psutil

            return float(psutil.Process().memory_info().rss) / 1e6

    llm = Llama(model, n_ctx=4096, n_seq_max=4, n_threads=threads)
    add = {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}

    def job(i: int) -> None:
        kind = i % 4
        msgs = [{"role": "user", "content": f"Request {i}: what is {i} plus 1?"}]
        if kind == 0:
            llm(f"Count: {i},", max_tokens=8)
        elif kind == 1:
            llm.create_chat_completion(msgs, max_tokens=8)
        elif kind == 2:
            llm.create_chat_completion(msgs, tools=[add], tool_choice="required", max_tokens=24)
        else:
            llm.create_chat_completion(msgs, response_format=fmt, max_tokens=16)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(job, range(100)))
        after_100 = rss_mb()
        list(pool.map(job, range(100, 1000)))
    after_1000 = rss_mb()
    llm.close()
    return after_100, after_1000


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", help="GGUF file (default: the package's default model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["throughput", "interleaved", "loop", "memory"])
    args = ap.parse_args()
    from llamacpp_integrations import default_model_path

    model = args.model or default_model_path()
    if args.only == "memory":
        first, last = memory_growth(model, args.threads)
        growth = (last - first) / first * 100
        print(f"RSS after 100 requests {first:.1f} MB, after 1,000 {last:.1f} MB: {growth:+.2f}%")
        return

    tp = throughput(model, args.threads)
    print(
        f"Throughput, aggregate generated tokens/s ({args.threads} threads, 128 tokens per request)"
    )
    header = ["concurrent", "ours", "llama-server", "llama-cpp-python", "ours/server"]
    print("| " + " | ".join([*header, "ours/llama-cpp-python"]) + " |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (1, 2, 4, 8):
        o, s, r = tp["ours"].get(n), tp["llama-server"].get(n), tp["llama-cpp-python"].get(n)
        ratio_s = f"{o / s:.2f}x" if o and s else "-"
        ratio_r = f"{o / r:.2f}x" if o and r else "-"
        print(f"| {n} | {o:.1f} | {s or 0:.1f} | {r or 0:.1f} | {ratio_s} | {ratio_r} |")
    sys.stdout.flush()

    iv = interleaved(model, args.threads)
    doc = f"{iv['document_tokens']:.0f}-token documents"
    print(f"\nInterleaved conversations (4 x 6 turns x 48 tokens, {doc})")
    print(f"ours total {iv['ours_total_s']:.1f} s", end="")
    if "llama_cpp_python_total_s" in iv:
        ref_s = iv["llama_cpp_python_total_s"]
        print(f"; llama-cpp-python {ref_s:.1f} s; ratio {ref_s / iv['ours_total_s']:.2f}x", end="")
    print()
    warm, cold = iv["ours_turn6_ttft_s"], iv["ours_turn6_cold_ttft_s"]
    print(
        f"turn-6 time to first token: ours {warm * 1e3:.0f} ms, cold {cold * 1e3:.0f} ms, "
        f"{cold / warm:.1f}x faster warm"
    )
    sys.stdout.flush()

    lag = asyncio.run(loop_lag(model, args.threads))
    print(
        f"\nEvent loop: worst lag of a 10 ms ticker while 4 async streams ran: {lag * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
