#!/usr/bin/env python3
"""Many requests on one model: our continuous batching against llama.cpp's own llama-server and
against llama-cpp-python, in one script, on the same model and thread count.

1. Throughput: 1, 2, 4, 8 and 16 concurrent chat requests of 128 generated tokens each
   (ignore_eos, greedy, distinct prompts, cold caches), aggregate generated tokens per second,
   in alternating rounds, median ratios.
   - ours: one ``Llama`` with the default settings, and one with n slots (``n_seq_max=n``),
     one thread per request;
   - llama-server (built from the same pinned source by build_reference.py): ``-np n`` with a
     KV stream per slot (as ours), continuous batching, on 127.0.0.1, one HTTP client thread
     per request;
   - llama-cpp-python (one round, 1 and 4 concurrent): one ``Llama``; it cannot serve two
     requests at once, so they run one after another.
   Then a new request's generation speed while 0, 1 or 3 idle slots hold ~1,000-token caches,
   with a KV stream per slot (the default) and with one unified pool (``kv_unified=True``).
2. Interleaved conversations: 4 conversations, each opening with its own ~1,000-token
   document, 6 turns each, 48 generated tokens per turn, turns alternating between the
   conversations. Total wall time, ours vs llama-cpp-python, and our time to first token on
   turn 6 against the same turn from a cold cache.
3. Event loop: the worst lag of a 10 ms asyncio ticker while 4 async generations stream.
4. Memory: resident set size after 1,000 mixed requests (completions, chats, tool calls,
   JSON-schema replies, 8 threads) against after the first 100.

Usage::

    python benchmarks/build_reference.py        # once: builds llama-server
    python benchmarks/bench_batching.py         # nothing else busy; ~10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
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
    def __init__(
        self, model: str, threads: int, n_parallel: int, n_ctx_slot: int, extra: Sequence[str] = ()
    ) -> None:
        """llama-server with a KV stream per slot (its non-unified layout), n_ctx_slot each;
        ``extra``: more flags."""
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(SERVER), "-m", model, "-np", str(n_parallel), "-c", str(n_ctx_slot * n_parallel),
             "-t", str(threads), "-tb", str(threads), "-fa", "on", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-webui", *extra],
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

CONCURRENCY = (1, 2, 4, 8, 16)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def throughput(model: str, threads: int, rounds: int) -> dict[str, dict[int, list[float]]]:
    """Aggregate tokens/s of n concurrent 128-token chat requests, n in CONCURRENCY: ours with
    the default settings, ours and llama-server with n slots; alternating rounds."""
    from llamacpp_integrations import Llama

    results: dict[str, dict[int, list[float]]] = {
        "default": {}, "slots": {}, "llama-server": {}, "llama-cpp-python": {},
    }  # fmt: skip

    def run_ours(llm: Llama, n: int) -> float:
        def chat(i: int) -> int:
            out = llm.create_chat_completion(
                messages(i), max_tokens=128, temperature=0, ignore_eos=True
            )
            return int(out["usage"]["completion_tokens"])  # type: ignore[index]

        llm.reset()  # cold caches, as llama-server with cache_prompt off
        wall, tokens = timed_concurrent(chat, n)
        return tokens / wall

    default = Llama(model, n_threads=threads, flash_attn=True)
    for rnd in range(rounds):
        for n in CONCURRENCY:
            # one engine at a time: each holds its own thread pool
            with Llama(model, n_seq_max=n, n_threads=threads, flash_attn=True) as ours:
                ours.create_chat_completion(messages(0), max_tokens=4)  # warm up, as the server
                results["slots"].setdefault(n, []).append(run_ours(ours, n))
            results["default"].setdefault(n, []).append(run_ours(default, n))
            if SERVER.exists():
                server = Server(model, threads, n, 512)
                try:
                    server.chat(0, 4)  # warm up
                    wall, tokens = timed_concurrent(server.chat, n)
                    results["llama-server"].setdefault(n, []).append(tokens / wall)
                finally:
                    server.close()
            print(f"  round {rnd + 1}, {n} concurrent done", file=sys.stderr, flush=True)
    default.close()

    try:
        import llama_cpp
    except ImportError:
        return results
    ref = llama_cpp.Llama(model, n_ctx=2048, n_threads=threads, flash_attn=True, verbose=False)
    lock = threading.Lock()

    def ref_chat(i: int) -> int:
        with lock:  # one request at a time: the library cannot serve two at once
            out = ref.create_chat_completion(
                messages(i), max_tokens=128, temperature=0, logit_bias={ref.token_eos(): -1e9}
            )
        return int(out["usage"]["completion_tokens"])  # type: ignore[index]

    for n in (1, 4):  # one round: it runs requests one after another at any concurrency
        ref.reset()
        wall, tokens = timed_concurrent(ref_chat, n)
        results["llama-cpp-python"][n] = [tokens / wall]
    return results


def idle_caches(model: str, threads: int, rounds: int) -> dict[str, dict[int, list[float]]]:
    """A new request's generation speed (128 tokens) while 0, 1 or 3 idle slots each hold a
    ~1,000-token cache: per-slot KV streams (the default) against one unified KV pool."""
    from llamacpp_integrations import Llama

    out: dict[str, dict[int, list[float]]] = {"streams": {}, "unified": {}}
    engines = {
        "streams": Llama(model, n_ctx=2048, n_seq_max=4, n_threads=threads, flash_attn=True),
        "unified": Llama(
            model, n_ctx=8192, n_seq_max=4, kv_unified=True, n_threads=threads, flash_attn=True
        ),
    }
    doc = [" ".join(f"fact {k} of doc {i} is {k * 7 + i}." for k in range(72)) for i in range(3)]
    for llm in engines.values():
        llm("Warm up", max_tokens=8)
    for _ in range(rounds):
        for idle in (0, 1, 3):
            for name, llm in engines.items():
                llm.reset()
                for i in range(idle):
                    llm(doc[i], max_tokens=1)
                res = llm("Once upon a time", max_tokens=128, temperature=0, ignore_eos=True)
                timings = res["timings"]  # type: ignore[index]
                out[name].setdefault(idle, []).append(128e3 / float(timings["predicted_ms"]))
    out["doc_tokens"] = {0: [float(len(engines["streams"].tokenize(doc[0].encode())))]}
    for llm in engines.values():
        llm.close()
    return out


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
    ours = Llama(model, n_ctx=4096, n_seq_max=4, n_threads=threads, flash_attn=True)
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
    ap.add_argument("--only", choices=["throughput", "idle", "memory"])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = ap.parse_args()
    from llamacpp_integrations import default_model_path

    model = args.model or default_model_path()
    if args.only == "memory":
        first, last = memory_growth(model, args.threads)
        growth = (last - first) / first * 100
        print(f"RSS after 100 requests {first:.1f} MB, after 1,000 {last:.1f} MB: {growth:+.2f}%")
        return

    if args.only in (None, "throughput"):
        tp = throughput(model, args.threads, args.rounds)
        print(
            f"Throughput, aggregate generated tokens/s ({args.threads} threads, 128 tokens per "
            f"request, cold caches; medians of {args.rounds} alternating rounds)"
        )
        print(
            "| concurrent | ours, default | ours, n slots | llama-server, n slots "
            "| n slots/server | default/server | ours/llama-cpp-python |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for n in CONCURRENCY:
            d, o = median(tp["default"][n]), median(tp["slots"][n])
            srv = median(tp["llama-server"][n]) if n in tp["llama-server"] else 0.0
            ref = tp["llama-cpp-python"].get(n)
            # the ratios are medians of the per-round ratios (the machine drifts between rounds)
            r_o = r_d = "-"
            if srv:
                pairs = zip(tp["slots"][n], tp["default"][n], tp["llama-server"][n], strict=True)
                r_o = f"{median([a / c for a, _, c in pairs]):.2f}x"
                pairs = zip(tp["slots"][n], tp["default"][n], tp["llama-server"][n], strict=True)
                r_d = f"{median([b / c for _, b, c in pairs]):.2f}x"
            r_r = f"{o / ref[0]:.2f}x" if ref else "-"
            print(f"| {n} | {d:.1f} | {o:.1f} | {srv:.1f} | {r_o} | {r_d} | {r_r} |")
        sys.stdout.flush()

    if args.only in (None, "idle"):
        ic = idle_caches(model, args.threads, args.rounds)
        doc_tokens = ic["doc_tokens"][0][0]
        print(
            "\nA new request's generation tokens/s beside idle slots holding "
            f"{doc_tokens:.0f}-token caches"
            f" (medians of {args.rounds} rounds; ratio to no idle cache)"
        )
        print("| idle slots | per-slot streams (default) | ratio | unified pool | ratio |")
        print("| --- | --- | --- | --- | --- |")
        for idle in (0, 1, 3):
            st, un = median(ic["streams"][idle]), median(ic["unified"][idle])
            st0, un0 = median(ic["streams"][0]), median(ic["unified"][0])
            print(f"| {idle} | {st:.1f} | {st / st0:.2f}x | {un:.1f} | {un / un0:.2f}x |")
        sys.stdout.flush()
    if args.only in ("throughput", "idle"):
        return

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
