#!/usr/bin/env python3
"""What one process pays for a LangChain chat model, LLM and embeddings on one GGUF.

Each case runs in a fresh process: ``ChatLlamaCpp``, ``LlamaCpp`` and ``LlamaCppEmbeddings`` on the
default model with their default settings, each used once (a chat reply, a completion, an
embedding); then the process's resident memory, its thread count and how many engines it holds.
- shared (the default): the three adapters use the process's one ``Llama`` for that file and
  those settings;
- separate: ``share_client=False`` on each, one ``Llama`` each (what every adapter did before).

Usage::

    python benchmarks/bench_adapters.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def measure(share: bool, threads: int) -> dict[str, float]:
    from llamacpp_integrations import default_model_path
    from llamacpp_integrations.langchain import ChatLlamaCpp, LlamaCpp, LlamaCppEmbeddings

    path = default_model_path()
    common = {"model_path": path, "share_client": share, "n_threads": threads}
    chat = ChatLlamaCpp(**common, max_tokens=8, temperature=0)
    llm = LlamaCpp(**common, max_tokens=8, temperature=0)
    emb = LlamaCppEmbeddings(**common)
    chat.invoke("Hello")
    llm.invoke("The sea is")
    emb.embed_query("a short text")
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = (value.split() or [""])[0]
    engines = len({id(chat.llama), id(llm.llama), id(emb.llama)})
    return {"rss_mb": int(status["VmRSS"]) / 1024, "threads": int(status["Threads"]),
            "engines": engines}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=["shared", "separate"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "shared", args.threads)))
        return
    rows = {}
    for case in ("separate", "shared"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", case, "--threads", str(args.threads)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        rows[case] = json.loads(out.stdout.strip().splitlines()[-1])
    print("ChatLlamaCpp + LlamaCpp + LlamaCppEmbeddings on one GGUF, each used once")
    print("| adapters | engines | RSS | threads |")
    print("| --- | --- | --- | --- |")
    for case, r in rows.items():
        print(f"| {case} | {r['engines']} | {r['rss_mb']:.0f} MB | {r['threads']} |")


if __name__ == "__main__":
    main()
