#!/usr/bin/env python3
"""Speculative decoding: generation speed with n-gram drafts, ours against no speculation and
against llama.cpp's llama-server with the same kind and sizes, in one script, on the default
model and the same thread count.

Four workloads, greedy, up to 256 generated tokens per request, three prompts each:
- ``rag``: an answer that quotes the passage it was given;
- ``json``: extraction of a record's fields (which appear in the document) as JSON;
- ``rewrite``: a paragraph rewritten with a few words changed;
- ``story``: free-form story writing (nothing to copy).

Modes: ours without speculation; ours with ``speculative="ngram"`` and the default cost policy
(a draft is verified only when its expected yield beats its cost); ours verifying every draft
(``draft_always=True``) with each n-gram kind; llama-server with each kind (it verifies every
draft), the same sizes. Generation speed is generated tokens over generation time
(``timings.predicted_ms`` on both sides; prompt processing excluded), summed over a workload's
prompts; the modes alternate per prompt, rounds repeat, medians. Our greedy output with
speculation is checked against ours without, prompt by prompt. Then 4 concurrent requests of the
copy-heavy mix on one 4-slot engine: aggregate tokens per second of wall time.

Usage::

    python benchmarks/build_reference.py           # once: builds llama-server
    python benchmarks/bench_speculative.py         # nothing else busy; ~20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import bench_batching

SERVER = bench_batching.SERVER
MAX_TOKENS = 256
KINDS = ("ngram", "ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")
DRAFT_MAX = 16
NGRAM_SIZE = 3

PASSAGES = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is "
    "named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 "
    'to 1889. Locally nicknamed "La dame de fer" (French for "Iron Lady"), it was constructed '
    "as the centerpiece of the 1889 World's Fair. It was the tallest man-made structure in the "
    "world until the Chrysler Building in New York City was finished in 1930.",
    "Photosynthesis is the process by which green plants, algae and some bacteria convert light "
    "energy into chemical energy. During photosynthesis, light energy is captured by chlorophyll "
    "and used to convert water and carbon dioxide into glucose and oxygen. The oxygen is released "
    "into the air, and the glucose is stored in the plant as starch or used for energy.",
    "The Great Wall of China is a series of fortifications that were built across the historical "
    "northern borders of ancient Chinese states. Several walls were built from as early as the 7th "
    "century BC, and the best-known sections were built by the Ming dynasty between 1368 and "
    "1644. The total length of all sections is estimated at 21,196 kilometres.",
]
RECORDS = [
    "Invoice 4471 was issued on 12 March 2024 by Northwind Traders, 221 Baker Street, London, to "
    "Contoso Ltd, 18 Harbour Road, Dublin. Contact: Maria Gonzalez, maria.gonzalez@contoso.com, "
    "phone +353 1 555 0199. Amount due: 1,250.00 EUR by 11 April 2024.",
    "Order 99812 was placed on 3 June 2023 by Alice Johnson, 742 Evergreen Terrace, Springfield, "
    "for two Acme Rocket Skates and one Acme Giant Magnet. Email: alice.johnson@example.org, phone "
    "+1 555 0142. Total: 389.97 USD, shipped by express courier.",
    "Patient record: John Smith, born 14 February 1980, 55 Elm Street, Boston. Blood type O "
    "positive. Allergies: penicillin and peanuts. Primary physician: Dr. Emily Carter, "
    "emily.carter@bostonhealth.org, phone +1 617 555 0100.",
]
STORIES = ["a lighthouse keeper who finds a message in a bottle", "a red fox in a snowy forest",
           "a robot learning to paint"]  # fmt: skip


SYSTEM_RAG = "Answer from the context. Quote the context's sentences word for word."
ASK_RAG = "Question: What does the context say? Quote it."
ASK_JSON = (
    "Extract every name, address, email, phone number, date and amount from the document as a "
    "JSON object, copying the values exactly."
)
ASK_REWRITE = (
    'Rewrite this paragraph exactly, word for word, but write "famous" before the first noun:'
)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def workloads() -> dict[str, list[list[dict[str, str]]]]:
    return {
        "rag": [
            [{"role": "system", "content": SYSTEM_RAG}, user(f"Context:\n{p}\n\n{ASK_RAG}")]
            for p in PASSAGES
        ],
        "json": [[user(f"Document:\n{r}\n\n{ASK_JSON}")] for r in RECORDS],
        "rewrite": [[user(f"{ASK_REWRITE}\n\n{p}")] for p in PASSAGES],
        "story": [[user(f"Write a long story about {s}.")] for s in STORIES],
    }


class Row(NamedTuple):
    """One request: generated tokens, generation time, text, drafted and accepted tokens."""

    n: int
    ms: float
    text: str
    drafted: int
    accepted: int


def server_spec_args(kind: str) -> list[str]:
    """llama-server flags giving `kind` the sizes ours uses."""
    n, m = str(NGRAM_SIZE), str(DRAFT_MAX)
    if kind in ("ngram", "ngram-simple"):
        return [
            "--spec-type",
            "ngram-simple",
            "--spec-ngram-simple-size-n",
            n,
            "--spec-ngram-simple-size-m",
            m,
        ]
    if kind in ("ngram-map-k", "ngram-map-k4v"):
        return ["--spec-type", kind, f"--spec-{kind}-size-n", n, f"--spec-{kind}-size-m", m]
    if kind == "ngram-mod":
        return ["--spec-type", kind, "--spec-ngram-mod-n-match", n, "--spec-ngram-mod-n-max", m,
                "--spec-ngram-mod-n-min", "0"]  # fmt: skip
    return ["--spec-type", kind]


class Server(bench_batching.Server):
    """llama-server, one slot of 4096 tokens, drafting with `kind`."""

    def __init__(self, model: str, threads: int, kind: str) -> None:
        super().__init__(model, threads, 1, 4096, extra=tuple(server_spec_args(kind)))

    def chat(self, msgs: list[dict[str, str]]) -> Row:
        body = {"messages": msgs, "max_tokens": MAX_TOKENS, "temperature": 0}
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=600) as r:
            out = json.load(r)
        t = out["timings"]
        text = out["choices"][0]["message"]["content"]
        return Row(
            t["predicted_n"],
            t["predicted_ms"],
            text,
            t.get("draft_n", 0),
            t.get("draft_n_accepted", 0),
        )


def ours_chat(llm: Any, msgs: list[dict[str, str]]) -> Row:
    out = llm.create_chat_completion(msgs, max_tokens=MAX_TOKENS, temperature=0)
    t = out["timings"]
    text = out["choices"][0]["message"]["content"] or ""
    return Row(t["predicted_n"], t["predicted_ms"], text, t["draft_n"], t["draft_n_accepted"])


def ours_llama(
    model: str, threads: int, kind: str | None, always: bool = False, seqs: int = 1
) -> Any:
    from llamacpp_integrations import Llama

    return Llama(model, n_ctx=4096, n_seq_max=seqs, n_threads=threads, speculative=kind,
                 draft_max=DRAFT_MAX, draft_ngram_size=NGRAM_SIZE, draft_always=always)  # fmt: skip


def ngram_draft(history: list[int], n: int, m: int) -> list[int]:
    """What our "ngram" kind drafts after `history` (its last token sampled, not yet decoded):
    the tokens that followed the earlier place agreeing longest with the end of the history
    (at least n tokens, compared up to 32 back, the latest on a tie), at most m of them."""
    decoded = len(history) - 1
    best_at, best_len = -1, 0
    for i in range(decoded - 2, -1, -1):
        if best_len >= 32:
            break
        if history[i] != history[-1]:
            continue
        length = 1
        while length < 32 and i - length >= 0 and history[i - length] == history[-1 - length]:
            length += 1
        if length > best_len:
            best_at, best_len = i, length
    if best_at < 0 or best_len < n or m <= 0:
        return []
    return history[best_at + 1 : min(decoded, best_at + 1 + m)]


def ngram_bound(llm: Any, costs: Any, msgs: list[dict[str, str]]) -> tuple[float, float]:
    """Decode time of the greedy reply to `msgs` one token per decode, and with every ngram
    draft verified up to its last right token and no further (what no policy can beat with these
    drafts), at the decode costs the engine measured: an upper bound on what n-gram drafting
    gains here. `llm` drafts nothing; its reply's token ids are taken as generated. `costs`: the
    native engine whose cost policy measured the decodes (its ``decode_time``)."""
    templates = llm.chat_templates
    request = llm.native_engine.submit_chat(
        templates, json.dumps(msgs), llm.sampling_params(temperature=0), max_tokens=MAX_TOKENS
    )
    out = list(request.result().tokens)
    if len(out) < 2:
        return 0.0, 0.0
    # out[0] comes from the prompt's decode
    history = [*templates.apply(json.dumps(msgs)).tokens, out[0]]
    with_drafts = 0.0
    pos = 1
    while pos < len(out):
        draft = ngram_draft(history, NGRAM_SIZE, min(DRAFT_MAX, MAX_TOKENS - pos - 1))
        right = 0
        while right < len(draft) and pos + right < len(out) and draft[right] == out[pos + right]:
            right += 1
        with_drafts += costs.decode_time(1 + right)
        history.extend(out[pos : pos + 1 + right])
        pos += 1 + right
    return (len(out) - 1) * costs.decode_time(1), with_drafts


def single_stream(model: str, threads: int, rounds: int, with_server: bool) -> dict[str, Any]:
    work = workloads()
    ours = {"none": ours_llama(model, threads, None), "ngram": ours_llama(model, threads, "ngram")}
    for kind in KINDS[1:]:
        ours[f"{kind} always"] = ours_llama(model, threads, kind, always=True)
    servers = {kind: Server(model, threads, kind) for kind in KINDS[1:]} if with_server else {}
    calls: dict[str, Callable[[list[dict[str, str]]], Row]] = {
        **{f"ours {k}": (lambda m, llm=llm: ours_chat(llm, m)) for k, llm in ours.items()},
        **{f"server {k}": srv.chat for k, srv in servers.items()},
    }
    try:
        for call in calls.values():  # warm-up: page in the weights, build the graphs
            call(work["story"][0])
        # rows[mode][workload][prompt] = one Row per round; modes alternate per prompt
        rows: dict[str, dict[str, list[list[Row]]]] = {
            mode: {name: [[] for _ in prompts] for name, prompts in work.items()} for mode in calls
        }
        modes = list(calls)
        for rnd in range(rounds):
            for name, prompts in work.items():
                for i, msgs in enumerate(prompts):
                    for mode in modes if (rnd + i) % 2 == 0 else modes[::-1]:
                        rows[mode][name][i].append(calls[mode](msgs))
            print(f"  round {rnd + 1} of {rounds} done", file=sys.stderr, flush=True)
        # the bound, from the replies without drafts and the ngram engine's measured costs
        measured = ours["ngram"].native_engine
        costs = measured.decode_costs
        bounds = {}
        for name, prompts in work.items():
            sums = [ngram_bound(ours["none"], measured, msgs) for msgs in prompts]
            bounds[name] = sum(a for a, _ in sums) / sum(b for _, b in sums)
    finally:
        for srv in servers.values():
            srv.close()
        for llm in ours.values():
            llm.close()
    return {"rows": rows, "bounds": bounds, "costs": costs}


def concurrent(model: str, threads: int, rounds: int) -> dict[str, list[float]]:
    work = workloads()
    mix = [work["rag"][0], work["json"][0], work["rewrite"][0], work["rag"][1]]
    engines = {
        "none": ours_llama(model, threads, None, seqs=4),
        "ngram": ours_llama(model, threads, "ngram", seqs=4),
        "ngram always": ours_llama(model, threads, "ngram", always=True, seqs=4),
    }
    for llm in engines.values():
        llm.create_chat_completion(mix[0], max_tokens=8, temperature=0)
    out: dict[str, list[float]] = {}
    for rnd in range(rounds):
        for kind in list(engines) if rnd % 2 == 0 else list(engines)[::-1]:
            llm = engines[kind]
            llm.reset()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(mix)) as pool:
                results = list(pool.map(lambda m: ours_chat(llm, m), mix))  # noqa: B023
            wall = time.perf_counter() - t0
            out.setdefault(kind, []).append(sum(r.n for r in results) / wall)
    for llm in engines.values():
        llm.close()
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def report(single: dict[str, Any], conc: dict[str, list[float]], rounds: int, threads: int) -> None:
    names = list(workloads())
    rows = single["rows"]

    def speed(mode: str, name: str) -> float:
        """Median over rounds of the workload's tokens / generation time."""
        per_round = zip(*rows[mode][name], strict=True)
        return median([sum(r.n for r in rs) / sum(r.ms for r in rs) * 1e3 for rs in per_round])

    print(
        f"\nGeneration tokens/s (default model, {threads} threads, greedy, up to {MAX_TOKENS} "
        f"tokens, 3 prompts per workload, draft_max {DRAFT_MAX}, n-gram size {NGRAM_SIZE}; medians "
        f"of {rounds} rounds, the modes alternating per prompt)"
    )
    print("| mode | " + " | ".join(names) + " | accepted/drafted | greedy = ours none |")
    print("| --- | " + " | ".join("---" for _ in names) + " | --- | --- |")
    base = {n: speed("ours none", n) for n in names}
    for mode in rows:
        cells = []
        for n in names:
            v = speed(mode, n)
            cells.append(f"{v:.1f}" if mode == "ours none" else f"{v:.1f} ({v / base[n]:.2f}x)")
        last = [r[-1] for n in names for r in rows[mode][n]]
        ref = [r[-1] for n in names for r in rows["ours none"][n]]
        drafted, accepted = sum(r.drafted for r in last), sum(r.accepted for r in last)
        acc = f"{accepted}/{drafted}" if drafted else "-"
        same = sum(a.text == b.text for a, b in zip(last, ref, strict=True))
        print(f"| {mode} | " + " | ".join(cells) + f" | {acc} | {same}/{len(last)} |")
    costs = ", ".join(f"{r} {ms:.2f}" for r, ms in single["costs"])
    print(
        f"\nDecode costs the ngram engine measured (rows ms): {costs}. Upper bound of ngram drafts "
        "(ours: longest agreement, at least 3 tokens, up to 16) on the replies of ours none, every "
        "right draft token verified and no wrong one (decode time alone over with drafts): "
        + ", ".join(f"{n} {b:.2f}x" for n, b in single["bounds"].items())
    )
    servers = [m for m in rows if m.startswith("server ")]
    if servers:
        print(
            "\nOurs over llama-server, same kind and sizes, every draft verified (tokens/s ratio):"
        )
        print("| kind | " + " | ".join(names) + " |")
        print("| --- | " + " | ".join("---" for _ in names) + " |")
        for mode in servers:
            kind = mode.split(" ", 1)[1]
            ratios = [speed(f"ours {kind} always", n) / speed(mode, n) for n in names]
            print(f"| {kind} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    if conc:
        none = median(conc["none"])
        cells = [
            f"{k} {median(v):.1f} ({median(v) / none:.2f}x)" for k, v in conc.items() if k != "none"
        ]
        print(
            "\n4 concurrent requests (rag, json, rewrite, rag), one 4-slot engine, aggregate "
            f"tokens/s of wall time: none {none:.1f}, " + ", ".join(cells)
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", help="GGUF path (default: the package's default model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-server", action="store_true", help="skip llama-server")
    ap.add_argument("--no-concurrent", action="store_true")
    args = ap.parse_args()
    from llamacpp_integrations.models import default_model_path

    model = args.model or str(default_model_path())
    with_server = not args.no_server
    if with_server and not SERVER.exists():
        print(
            f"{SERVER} is missing (python benchmarks/build_reference.py); running without it",
            file=sys.stderr,
        )
        with_server = False
    single = single_stream(model, args.threads, args.rounds, with_server)
    conc = {} if args.no_concurrent else concurrent(model, args.threads, args.rounds)
    report(single, conc, args.rounds, args.threads)


if __name__ == "__main__":
    main()
