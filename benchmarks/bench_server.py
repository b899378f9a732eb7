#!/usr/bin/env python3
"""Our server against llama.cpp's ``llama-server`` and llama-cpp-python's server, same load.

1, 4, 8 and 16 concurrent streaming chat requests of exactly 128 generated tokens (greedy, a
different prompt per request, EOS ignored or banned; below 4 concurrent, waves of them until 4
requests have run), 2 threads, the default model. All three servers run at once on 127.0.0.1
and take turns, in alternating order each round, so a drift of the machine's speed hits them
alike. Printed per concurrency: aggregate tokens/s, p50 and p99
time to first token, p50 inter-token latency, and the ratios (medians over the rounds).

Then two models in one of our servers (the default model under two aliases with different
settings) used alternately: tokens/s of each against one alias used alone.

    python benchmarks/build_reference.py     # llama-server from the pinned source, once
    pip install "llama-cpp-python[server]==0.3.36"   # optional: its column is skipped without it
    python benchmarks/bench_server.py [--rounds 3] [--threads 2] [--slots 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
LLAMA_SERVER = REPO / ".bench" / "llama.cpp-build" / "bin" / "llama-server"
TOKENS = 128
TOPICS = ["a lighthouse", "a red fox", "an old clock", "the first snow", "a lost key",
          "a paper boat", "a quiet library", "a desert well"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, name: str, cmd: list[str], port: int, body_extra: dict[str, Any]) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.body_extra = body_extra
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                probe = "/health" if name != "llama-cpp-python" else "/v1/models"
                if httpx.get(self.url + probe, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited while starting")
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def stream_one(server: Proc, i: int, model: str | None = None) -> dict[str, float]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Write a long story about {TOPICS[i % 8]}."}],
        "max_tokens": TOKENS,
        "temperature": 0,
        "stream": True,
        **server.body_extra,
    }
    if model is not None:
        body["model"] = model
    t0 = time.perf_counter()
    stamps: list[float] = []
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for c in chunk.get("choices") or []:
                if (c.get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "tokens": float(len(stamps)),
        "ttft": stamps[0] - t0 if stamps else float("nan"),
        "itl": statistics.mean(gaps) if gaps else float("nan"),
    }


def load(server: Proc, concurrency: int) -> dict[str, float]:
    """``concurrency`` streams at once; below 4, several such waves back to back (4 requests in
    all), since one request of about a second is too small a sample on a machine that drifts."""
    waves = max(1, 4 // concurrency)
    t0 = time.perf_counter()
    runs: list[dict[str, float]] = []
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(waves):
            runs += pool.map(lambda i: stream_one(server, i), range(concurrency))
    wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft"] for r in runs)
    return {
        "tps": sum(r["tokens"] for r in runs) / wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p99": ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))],
        "itl_p50": statistics.median(r["itl"] for r in runs),
        "tokens_min": min(r["tokens"] for r in runs),
    }


def start_servers(args: argparse.Namespace, model: str) -> list[Proc]:
    t = str(args.threads)
    servers = []
    port = free_port()
    servers.append(
        Proc(
            "ours",
            [sys.executable, "-m", "llamacpp_integrations.server", "--model", model, "--port",
             str(port), "--n-ctx", str(args.n_ctx), "--n-seq-max", str(args.slots),
             "--n-threads", t, "--max-queue", "64"],
            port,
            {"ignore_eos": True},
        )
    )  # fmt: skip
    if LLAMA_SERVER.exists():
        port = free_port()
        servers.append(
            Proc(
                "llama-server",
                [str(LLAMA_SERVER), "-m", model, "-np", str(args.slots), "-c", str(args.n_ctx),
                 "--kv-unified", "-t", t, "-tb", t, "-fa", "on", "--host", "127.0.0.1",
                 "--port", str(port), "--no-webui"],
                port,
                {"ignore_eos": True},
            )
        )  # fmt: skip
    else:
        print(f"(llama-server not built: run benchmarks/build_reference.py; {LLAMA_SERVER})")
    if importlib.util.find_spec("llama_cpp") is not None:
        port = free_port()
        # it has no ignore_eos: ban the end-of-turn and end-of-text tokens instead
        servers.append(
            Proc(
                "llama-cpp-python",
                [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port),
                 "--host", "127.0.0.1", "--n_ctx", "2048", "--n_threads", t,
                 "--n_threads_batch", t, "--flash_attn", "true"],
                port,
                {"logit_bias": {"0": -100, "2": -100}},
            )
        )  # fmt: skip
    else:
        print("(llama-cpp-python not installed: its column is skipped)")
    return servers


def two_models(args: argparse.Namespace, model: str) -> dict[str, float]:
    cfg = Path(tempfile.mkdtemp()) / "models.json"
    cfg.write_text(json.dumps({"models": [
        {"path": model, "alias": "a", "n_ctx": 2048, "n_seq_max": 4},
        {"path": model, "alias": "b", "n_ctx": 4096, "n_seq_max": 2},
    ]}))  # fmt: skip
    port = free_port()
    cmd = [sys.executable, "-m", "llamacpp_integrations.server", "--config", str(cfg),
           "--port", str(port), "--n-threads", str(args.threads)]  # fmt: skip
    server = Proc("ours (two models)", cmd, port, {"ignore_eos": True})
    try:

        def rate(names: list[str]) -> dict[str, list[float]]:
            out: dict[str, list[float]] = {n: [] for n in set(names)}
            for i, name in enumerate(names):
                t0 = time.perf_counter()
                r = stream_one(server, i, model=name)
                out[name].append(r["tokens"] / (time.perf_counter() - t0))
            return out

        rate(["a", "b"])  # warm-up
        alone, alternating = [], {"a": [], "b": []}  # type: ignore[var-annotated]
        for _ in range(args.rounds):
            alone += rate(["a"] * 4)["a"]
            alt = rate(["a", "b"] * 2)
            alternating["a"] += alt["a"]
            alternating["b"] += alt["b"]
        base = statistics.median(alone)
        return {
            "alone_tps": base,
            "a_alternating_ratio": statistics.median(alternating["a"]) / base,
            "b_alternating_ratio": statistics.median(alternating["b"]) / base,
        }
    finally:
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--n-ctx", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", default="1,4,8,16")
    args = p.parse_args()
    if args.model is None:
        from llamacpp_integrations import default_model_path

        args.model = default_model_path()
    levels = [int(x) for x in args.concurrency.split(",")]
    servers = start_servers(args, args.model)
    results: dict[str, dict[int, list[dict[str, float]]]] = {
        s.name: {c: [] for c in levels} for s in servers
    }
    try:
        for s in servers:
            load(s, 1)  # warm-up
        for r in range(args.rounds):
            for c in levels:
                for s in servers if r % 2 == 0 else reversed(servers):
                    results[s.name][c].append(load(s, c))
    finally:
        for s in servers:
            s.close()

    def med(name: str, c: int, key: str) -> float:
        return statistics.median(x[key] for x in results[name][c])

    names = [s.name for s in servers]
    print(f"\nStreaming chat, {TOKENS} tokens per request, {args.threads} threads, "
          f"{args.slots} slots, median of {args.rounds} rounds")  # fmt: skip
    print("| concurrent | server | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in levels:
        for n in names:
            cells = [
                f"{med(n, c, 'tps'):.1f}",
                f"{med(n, c, 'ttft_p50') * 1e3:.0f}",
                f"{med(n, c, 'ttft_p99') * 1e3:.0f}",
                f"{med(n, c, 'itl_p50') * 1e3:.1f}",
            ]
            print(f"| {c} | {n} | " + " | ".join(cells) + " |")
    print("\n| concurrent | tokens/s ours/llama-server | TTFT p99 ours/llama-server | "
          "tokens/s ours/llama-cpp-python |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for c in levels:
        row = [str(c)]
        for other, key in (("llama-server", "tps"), ("llama-server", "ttft_p99"),
                           ("llama-cpp-python", "tps")):  # fmt: skip
            row.append(
                f"{med('ours', c, key) / med(other, c, key):.2f}x" if other in names else "n/a"
            )
        print("| " + " | ".join(row) + " |")
    short = [
        n for n in names for c in levels if min(x["tokens_min"] for x in results[n][c]) < TOKENS
    ]
    if short:
        print(f"(fewer than {TOKENS} tokens in some requests of: {sorted(set(short))})")
    two = two_models(args, args.model)
    print(
        f"\nTwo models in one server, used alternately: a {two['a_alternating_ratio']:.3f}x, "
        f"b {two['b_alternating_ratio']:.3f}x of one model alone ({two['alone_tps']:.1f} t/s)"
    )
    print("\nRESULT " + json.dumps({"results": results, "two_models": two}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
