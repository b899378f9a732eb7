#!/usr/bin/env python3
"""Soak: load/close cycles, then many mixed requests on one model from several threads, while
the process's resident memory, open file descriptors and threads are sampled.

Run by tests/integration/test_soak.py in a child process (so that only this work is in it), or
by hand: ``python tests/soak.py --model M.gguf --cycles 100 --requests 10000 --threads 8``.
Prints one ``SOAK {json}`` line: for each phase the samples after warm-up and at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from llamacpp_integrations import GrammarError, Llama, LlamaError

PROMPTS = [
    "The lighthouse keeper",
    "List three colours:",
    "def add(a, b):",
    "Once upon a time, in a small village by the sea,",
]


def sample() -> dict[str, int]:
    """Resident memory (KiB), open file descriptors and threads of this process."""
    text = Path("/proc/self/status").read_text()
    status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": int(status["Threads"]),
    }


def settled() -> dict[str, int]:
    gc.collect()
    return sample()


def cycles(model_path: str, n: int, warmup: int) -> dict[str, object]:
    """n times: load the model, answer one request, close it."""
    base: dict[str, int] | None = None
    for i in range(n):
        with Llama(model_path=model_path, n_ctx=256, verbose=False) as llm:
            llm(PROMPTS[i % len(PROMPTS)], max_tokens=2, temperature=0.0)
        if i + 1 == warmup:
            base = settled()
    return {"after_warmup": base, "end": settled()}


def request_kinds(llm: Llama) -> list[tuple[str, Callable[[int], object]]]:
    def complete(i: int) -> object:
        return llm(PROMPTS[i % len(PROMPTS)], max_tokens=1 + i % 4, temperature=0.0)

    def sampled(i: int) -> object:
        return llm(PROMPTS[i % len(PROMPTS)], max_tokens=3, temperature=0.8, seed=i)

    def chat(i: int) -> object:
        messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        return llm.create_chat_completion(messages, max_tokens=2, temperature=0.0)

    def stream_closed_early(i: int) -> object:
        stream = llm(PROMPTS[i % len(PROMPTS)], max_tokens=64, stream=True)
        for _ in stream:
            break
        stream.close()
        return None

    def cancelled(i: int) -> object:
        handle = llm.submit_completion(PROMPTS[i % len(PROMPTS)], max_tokens=64)
        handle.close()
        return None

    def tokens(i: int) -> object:
        toks = llm.tokenize(PROMPTS[i % len(PROMPTS)].encode())
        return llm.detokenize(toks)

    def embed(i: int) -> object:
        return llm.create_embedding(PROMPTS[i % len(PROMPTS)])

    def bad_grammar(i: int) -> object:
        try:
            llm("x", max_tokens=1, grammar='root ::= "a"{3,1}')
        except GrammarError:
            return None
        raise AssertionError("a reversed repetition bound was accepted")

    def too_long(i: int) -> object:
        try:
            llm("word " * 600, max_tokens=1)
        except LlamaError:
            return None
        raise AssertionError("a prompt longer than the context was accepted")

    return [
        ("complete", complete),
        ("sampled", sampled),
        ("chat", chat),
        ("stream_closed_early", stream_closed_early),
        ("cancelled", cancelled),
        ("tokens", tokens),
        ("embed", embed),
        ("bad_grammar", bad_grammar),
        ("too_long", too_long),
    ]


def mixed(model_path: str, n: int, n_threads: int, warmup: int) -> dict[str, object]:
    """n requests of every kind in turn, from n_threads threads, on one model."""
    llm = Llama(model_path=model_path, n_ctx=512, n_seq_max=8, verbose=False)
    kinds = request_kinds(llm)
    lock = threading.Lock()
    next_index = 0
    done: Counter[str] = Counter()
    failures: list[str] = []
    base: dict[str, int] | None = None
    warm = threading.Event()

    def worker() -> None:
        nonlocal next_index
        while True:
            with lock:
                i = next_index
                next_index += 1
            if i >= n or failures:
                return
            name, fn = kinds[i % len(kinds)]
            try:
                fn(i)
            except BaseException as e:  # reported, and the soak stops
                with lock:
                    failures.append(f"request {i} ({name}): {type(e).__name__}: {e}")
                return
            with lock:
                done[name] += 1
                if sum(done.values()) == warmup:
                    warm.set()

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    warm.wait()
    base = settled()  # while the requests go on: the steady state
    for t in threads:
        t.join()
    end = settled()
    llm.close()
    return {
        "after_warmup": base,
        "end": end,
        "done": dict(done),
        "failures": failures,
        "closed": settled(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    report = {
        "start": sample(),
        "cycles": cycles(args.model, args.cycles, warmup=max(1, args.cycles // 10)),
        "mixed": mixed(args.model, args.requests, args.threads, warmup=max(1, args.requests // 10)),
    }
    print("SOAK " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
