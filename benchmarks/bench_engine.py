#!/usr/bin/env python3
"""Compare our engine with llama.cpp's own llama-bench and with llama-cpp-python.

All three run the same GGUF model on the same llama.cpp source (the pin in
``third_party/llama.cpp/pin.json`` is the ``vendor/llama.cpp`` of llama-cpp-python 0.3.36) with
the same threads, batch size and flash-attention setting. Each engine runs in its own
subprocess so that its peak RSS is its own. Measured:

* pp512: prompt processing, tokens/s on a 512-token prompt with an empty KV cache each rep.
* tg128: generation, tokens/s generating 128 tokens after a 1-token prompt, EOS ignored.
* peak RSS of the process that ran pp512 and tg128 (and, for the Python engines, its RSS after
  importing the engine, before loading the model).
* the per-token cost a Python engine adds over llama.cpp's own decode time, at 128, 512 and
  2048 generated tokens: (wall time of the call - time inside llama_decode) / tokens.

pp512 and tg128 run in ``--rounds`` rounds, each starting every engine once, in alternating
order, so that a drift of the machine's speed affects every engine alike.

Run ``python benchmarks/bench_engine.py --help`` for the options; ``benchmarks/README.md``
explains every number.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_reference  # noqa: E402  (the helper next to this script)

PP_TOKENS = 512
TG_TOKENS = 128
OVERHEAD_LENGTHS = (128, 512, 2048)
N_CTX_LONG = 2600  # room for the longest generation
LCP_VERSION = "0.3.36"
RESULT_MARKER = "BENCH_RESULT "

# Targets from the issue.
TARGET_VS_LLAMA_BENCH = 0.97
TARGET_VS_LCP = 1.0
TARGET_ADDED_US = 50.0
TARGET_FLAT_US = 10.0  # "flat with length": max - min over the lengths, in µs/token
TARGET_RSS_PCT = 10.0

PROMPT_TEXT = (
    "The history of computing is a story of people trying to make machines do more of the "
    "tedious work of calculation. Early mechanical calculators added and multiplied numbers "
    "with gears and levers; later, punched cards carried both data and instructions. "
    "Electronic computers replaced the gears with vacuum tubes, then transistors, then "
    "integrated circuits holding billions of switches. Along the way programmers invented "
    "languages, compilers, operating systems and networks, and every layer made the next one "
    "possible. Today a small language model can run on a laptop, predicting one token after "
    "another from patterns it learned while reading a large amount of text. "
)


# ---------------------------------------------------------------------------------------------
# child side: one engine in one process


@dataclass
class Run:
    """One timed call of an engine."""

    wall_ms: float  # the whole call as the Python caller sees it
    prompt_n: int  # prompt tokens the engine decoded
    prompt_ms: float  # the engine's own prompt-phase time
    generated: int  # tokens generated
    decode_ms: float  # time inside llama_decode, prompt and generation together
    sample_ms: float | None  # time in the sampler (ours only)
    text: str


class OursEngine:
    name = "ours"
    module = "llamacpp_integrations"

    def __init__(self, spec: dict[str, Any], n_ctx: int) -> None:
        from llamacpp_integrations import Llama

        self.llm = Llama(
            model_path=spec["model"],
            n_ctx=n_ctx,
            n_threads=spec["threads"],
            n_threads_batch=spec["threads"],
            n_batch=spec["n_batch"],
            n_ubatch=spec["n_batch"],
            flash_attn=spec["flash_attn"],
        )

    def run(self, tokens: list[int], max_tokens: int) -> Run:
        self.llm.reset()
        t0 = time.perf_counter()
        out = self.llm.create_completion(
            tokens, max_tokens=max_tokens, temperature=0.0, ignore_eos=True
        )
        wall_ms = (time.perf_counter() - t0) * 1e3
        t = out["timings"]
        return Run(
            wall_ms=wall_ms,
            prompt_n=t["prompt_n"],
            prompt_ms=t["prompt_ms"],
            generated=t["predicted_n"],
            # the prompt phase is (almost) all llama_decode; decode_ms covers the generation
            decode_ms=t["prompt_ms"] + t["decode_ms"],
            sample_ms=t["sample_ms"],
            text=out["choices"][0]["text"],
        )

    def close(self) -> None:
        self.llm.close()


class LlamaCppPythonEngine:
    name = "llama-cpp-python"
    module = "llama_cpp"

    def __init__(self, spec: dict[str, Any], n_ctx: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=spec["model"],
            n_ctx=n_ctx,
            n_threads=spec["threads"],
            n_threads_batch=spec["threads"],
            n_batch=spec["n_batch"],
            n_ubatch=spec["n_batch"],
            flash_attn=spec["flash_attn"],
            verbose=False,
        )
        # What a llama-cpp-python user passes to keep generating past EOS: a -inf logit bias on
        # every end-of-generation token (our ignore_eos does the same natively).
        vocab = self.llm._model.vocab
        self.ignore_eos = {
            t: float("-inf")
            for t in range(self.llm.n_vocab())
            if llama_cpp.llama_vocab_is_eog(vocab, t)
        }

    def run(self, tokens: list[int], max_tokens: int) -> Run:
        ctx = self.llm._ctx.ctx
        self.llm.reset()
        self.lib.llama_perf_context_reset(ctx)
        t0 = time.perf_counter()
        out = self.llm.create_completion(
            tokens, max_tokens=max_tokens, temperature=0.0, logit_bias=self.ignore_eos
        )
        wall_ms = (time.perf_counter() - t0) * 1e3
        perf = self.lib.llama_perf_context(ctx)
        # llama.cpp books single-token decodes (a 1-token prompt too) under t_eval, batches of
        # more than one token under t_p_eval: together they are all the time in llama_decode.
        # Generating n tokens decodes n - 1 of them; the other decodes were the prompt's.
        # llama_perf_context reports a count of 0 as 1; its time is 0 then.
        n_p_eval = perf.n_p_eval if perf.t_p_eval_ms > 0 else 0
        n_eval = perf.n_eval if perf.t_eval_ms > 0 else 0
        generated = out["usage"]["completion_tokens"]
        return Run(
            wall_ms=wall_ms,
            prompt_n=n_p_eval + n_eval - (generated - 1),
            prompt_ms=perf.t_p_eval_ms,
            generated=generated,
            decode_ms=perf.t_p_eval_ms + perf.t_eval_ms,
            sample_ms=None,
            text=out["choices"][0]["text"],
        )

    def close(self) -> None:
        self.llm.close()


ENGINES = {cls.name: cls for cls in (OursEngine, LlamaCppPythonEngine)}


def peak_rss_mb(usage: resource.struct_rusage | None = None) -> float:
    """Peak RSS in MB of this process, or of the child ``usage`` describes."""
    rss = (usage or resource.getrusage(resource.RUSAGE_SELF)).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024  # bytes / KiB


def timed_runs(engine: Any, tokens: list[int], max_tokens: int, reps: int) -> list[Run]:
    engine.run(tokens, max_tokens)  # warm-up, as llama-bench does
    return [engine.run(tokens, max_tokens) for _ in range(reps)]


def check(runs: list[Run], prompt_n: int, generated: int, what: str) -> None:
    for r in runs:
        if r.prompt_n != prompt_n or r.generated != generated:
            raise RuntimeError(
                f"{what}: expected {prompt_n} prompt tokens decoded and {generated} generated, "
                f"got {r.prompt_n} and {r.generated} (cache not cleared, or EOS not ignored?)"
            )


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux); elsewhere the peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except OSError:
        return peak_rss_mb()


def child_main(engine_name: str, phase: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if phase == "prepare":
        # here rather than in the parent: a child's peak RSS starts at its parent's RSS
        model = default_model_path(spec["model"])
        print(RESULT_MARKER + json.dumps({"model": model, "prompts": prompts(model)}))
        return
    cls = ENGINES[engine_name]
    importlib.import_module(cls.module)
    result: dict[str, Any] = {"import_rss_mb": current_rss_mb()}
    tg_prompt = spec["tg_prompt"]
    if phase == "throughput":
        # the context llama-bench's runs need (prompt + generation), so that RSS compares
        engine = cls(spec, n_ctx=PP_TOKENS + TG_TOKENS)
        pp = timed_runs(engine, spec["pp_prompt"], 1, spec["reps"])
        check(pp, PP_TOKENS, 1, "pp512")
        tg = timed_runs(engine, tg_prompt, TG_TOKENS, spec["reps"])
        check(tg, len(tg_prompt), TG_TOKENS, "tg128")
        result.update(pp=[asdict(r) for r in pp], tg=[asdict(r) for r in tg])
    else:
        # added cost per token at several lengths, in a context large enough for the longest
        engine = cls(spec, n_ctx=N_CTX_LONG)
        overhead = {}
        for n in OVERHEAD_LENGTHS:
            runs = timed_runs(engine, tg_prompt, n, spec["reps_long"] if n > 512 else spec["reps"])
            check(runs, len(tg_prompt), n, f"generation of {n}")
            overhead[str(n)] = [asdict(r) for r in runs]
        result["overhead"] = overhead
    engine.close()
    print(RESULT_MARKER + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# parent side: orchestration and report


def run_process(cmd: list[str], what: str) -> tuple[str, float]:
    """Runs cmd; returns its stdout and its peak RSS in MB; raises when it fails.

    The peak RSS comes from os.wait4. On Linux a child's peak starts at its parent's RSS when it
    was spawned (exec keeps the larger high-water mark), which is why the parent loads nothing.
    """
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{err.read()[-3000:]}")
        return out, peak_rss_mb(usage)


def run_python_child(name: str, phase: str, spec_path: str) -> tuple[dict[str, Any], float]:
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, "--child", name, "--phase", phase, "--spec", spec_path]
    out, rss = run_process(cmd, f"{name} ({phase})")
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARKER)]
    if not lines:
        raise RuntimeError(f"{name} ({phase}) printed no result:\n{out[-3000:]}")
    return json.loads(lines[-1][len(RESULT_MARKER) :]), rss


def throughput_python(name: str, spec_path: str) -> dict[str, Any]:
    """One throughput round of a Python engine: t/s samples and peak RSS."""
    res, rss = run_python_child(name, "throughput", spec_path)
    return {
        "pp512": [r["prompt_n"] / r["wall_ms"] * 1e3 for r in res["pp"]],
        "tg128": [r["generated"] / r["wall_ms"] * 1e3 for r in res["tg"]],
        "pp512_engine_internal": [r["prompt_n"] / r["prompt_ms"] * 1e3 for r in res["pp"]],
        "tg128_decode_us_per_token": [r["decode_ms"] / TG_TOKENS * 1e3 for r in res["tg"]],
        "peak_rss_mb": rss,
        "import_rss_mb": res["import_rss_mb"],
        "tg128_text": res["tg"][0]["text"],
    }


def throughput_llama_bench(binary: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One round of llama-bench: t/s samples and peak RSS."""
    cmd = [
        str(binary), "-m", args.model, "-p", str(PP_TOKENS), "-n", str(TG_TOKENS),
        "-t", str(args.threads), "-r", str(args.reps), "-b", str(args.n_batch),
        "-ub", str(args.n_batch), "-fa", args.flash_attn, "-o", "json",
    ]  # fmt: skip
    out, rss = run_process(cmd, "llama-bench")
    round_: dict[str, Any] = {"peak_rss_mb": rss, "command": cmd}
    for test in json.loads(out):
        kind = "pp512" if test["n_gen"] == 0 else "tg128"
        round_[kind] = test["samples_ts"]
    return round_


def overhead_python(name: str, spec_path: str) -> dict[str, Any]:
    """Added µs/token over llama_decode at each length (and what it is made of)."""
    res, _ = run_python_child(name, "overhead", spec_path)
    out = {}
    for n, runs in res["overhead"].items():
        added = [(r["wall_ms"] - r["decode_ms"]) / r["generated"] * 1e3 for r in runs]
        sampling = [r["sample_ms"] / r["generated"] * 1e3 for r in runs if r["sample_ms"]]
        out[n] = {
            "added_us_per_token": statistics.mean(added),
            "added_us_samples": added,
            "sample_us_per_token": statistics.mean(sampling) if sampling else None,
            "decode_us_per_token": statistics.mean(
                r["decode_ms"] / r["generated"] * 1e3 for r in runs
            ),
        }
    return out


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """All rounds of one engine: t/s over every sample, the highest peak RSS."""
    merged: dict[str, Any] = {
        "rounds": rounds,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
    }
    for key in ("pp512", "tg128", "pp512_engine_internal", "tg128_decode_us_per_token"):
        if key in rounds[0]:
            merged[key] = summary([v for r in rounds for v in r[key]])
    if "import_rss_mb" in rounds[0]:
        merged["import_rss_mb"] = max(r["import_rss_mb"] for r in rounds)
        merged["tg128_text"] = rounds[0]["tg128_text"]
    return merged


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.mean(values),
        "median": statistics.median(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "samples": values,
    }


def default_model_path(model: str | None) -> str:
    from llamacpp_integrations import default_model_path

    return default_model_path(model)


def prompts(model: str) -> tuple[list[int], list[int]]:
    """The 512-token prompt and the 1-token prompt, tokenized once for every engine."""
    from llamacpp_integrations import Llama

    vocab = Llama(model_path=model, vocab_only=True)
    tokens = vocab.tokenize(PROMPT_TEXT)
    while len(tokens) < PP_TOKENS:
        tokens += vocab.tokenize(PROMPT_TEXT, add_bos=False)
    vocab.close()
    return tokens[:PP_TOKENS], tokens[:1]


def write_json(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def lcp_status() -> str | None:
    """None when llama-cpp-python can be used, else why not."""
    if importlib.util.find_spec("llama_cpp") is None:
        return (
            f"llama-cpp-python is not installed (pip install llama-cpp-python=={LCP_VERSION}); "
            "skipping its column"
        )
    version = importlib.metadata.version("llama-cpp-python")
    if version != LCP_VERSION:
        print(
            f"warning: llama-cpp-python {version} is installed; the pin is {LCP_VERSION}, so it "
            "runs a different llama.cpp",
            file=sys.stderr,
        )
    return None


def fmt_rate(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:9.1f} ± {s['stdev']:5.1f}"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, skip_reason: str | None
) -> dict[str, Any]:
    ref, ours, lcp = results["llama-bench"], results["ours"], results.get("llama-cpp-python")
    print()
    print(
        f"model {Path(args.model).name} | threads {args.threads} | n_batch {args.n_batch} | "
        f"flash_attn {args.flash_attn} | {args.rounds} rounds x {args.reps} reps "
        f"(2048-token runs: {args.reps_long} reps)"
    )
    print("llama-bench arguments: " + shlex.join(ref["rounds"][0]["command"][1:]))
    if skip_reason is not None:
        print(f"llama-cpp-python: {skip_reason}")
    print()
    print(
        f"{'engine':<18} {'pp512 t/s':>17} {'tg128 t/s':>17} {'peak RSS MB':>12} {'imports MB':>11}"
    )
    for name, r in results.items():
        imported = f"{r['import_rss_mb']:11.1f}" if "import_rss_mb" in r else f"{'-':>11}"
        print(
            f"{name:<18} {fmt_rate(r['pp512']):>17} {fmt_rate(r['tg128']):>17} "
            f"{r['peak_rss_mb']:12.1f} {imported}"
        )

    ratios: dict[str, Any] = {}
    print()
    print(
        f"{'ratio of the means':<32} {'value':>8}  {'target':<12} {'verdict':<8} (of the medians)"
    )

    def ratio_line(
        label: str, key: str, num: dict[str, Any], den: dict[str, Any], target: float
    ) -> None:
        value, median = num["mean"] / den["mean"], num["median"] / den["median"]
        ok = value >= target
        ratios[key] = {"value": value, "median_ratio": median, "target": target, "ok": ok}
        print(f"{label:<32} {value:7.3f}x  >= {target:.2f}x     {verdict(ok):<8} ({median:.3f}x)")

    for metric in ("pp512", "tg128"):
        ratio_line(
            f"ours / llama-bench {metric}",
            f"ours_vs_llama_bench_{metric}",
            ours[metric],
            ref[metric],
            TARGET_VS_LLAMA_BENCH,
        )
    if lcp is not None:
        for metric in ("pp512", "tg128"):
            ratio_line(
                f"ours / llama-cpp-python {metric}",
                f"ours_vs_llama_cpp_python_{metric}",
                ours[metric],
                lcp[metric],
                TARGET_VS_LCP,
            )
    rss_pct = (ours["peak_rss_mb"] / ref["peak_rss_mb"] - 1) * 100
    rss_ok = abs(rss_pct) <= TARGET_RSS_PCT
    ratios["ours_vs_llama_bench_rss_pct"] = {
        "value": rss_pct,
        "target": TARGET_RSS_PCT,
        "ok": rss_ok,
    }
    within = f"within ±{TARGET_RSS_PCT:.0f}%"
    print(f"{'peak RSS ours vs llama-bench':<32} {rss_pct:+7.1f}%  {within:<12} {verdict(rss_ok)}")

    print()
    print("added cost over llama_decode, µs/token (wall of the call - time in llama_decode)")
    lengths = [str(n) for n in OVERHEAD_LENGTHS]
    header = "".join(f"{n:>9}" for n in lengths)
    target = f"target: <= {TARGET_ADDED_US:.0f}, spread <= {TARGET_FLAT_US:.0f}"
    print(f"{'engine':<28}{header}   {target}")
    added: dict[str, Any] = {}
    for name in ("ours", "llama-cpp-python"):
        r = results.get(name)
        if r is None:
            continue
        values = [r["overhead"][n]["added_us_per_token"] for n in lengths]
        spread = max(values) - min(values)
        ok = max(values) <= TARGET_ADDED_US and spread <= TARGET_FLAT_US
        added[name] = {"values": dict(zip(lengths, values, strict=True)), "spread": spread}
        cells = "".join(f"{v:9.1f}" for v in values)
        if name == "ours":
            added[name]["ok"] = ok
            print(f"{name:<28}{cells}   spread {spread:.1f}  {verdict(ok)}")
            sampling = "".join(f"{r['overhead'][n]['sample_us_per_token']:9.1f}" for n in lengths)
            print(f"{'  of which sampling':<28}{sampling}")
        else:
            print(f"{name:<28}{cells}   spread {spread:.1f}")
    decode = "".join(f"{ours['overhead'][n]['decode_us_per_token']:9.0f}" for n in lengths)
    print(f"{'(ours: llama_decode itself)':<28}{decode}")

    if lcp is not None:
        same = ours["tg128_text"] == lcp["tg128_text"]
        print()
        print(f"greedy tg128 text identical, ours vs llama-cpp-python: {'yes' if same else 'NO'}")
    return {"ratios": ratios, "added_cost": added}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark our engine against llama-bench and llama-cpp-python."
    )
    parser.add_argument("--model", help="GGUF file (default: the package's default model)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="default: os.cpu_count()"
    )
    parser.add_argument("--reps", type=int, default=3, help="timed runs per figure and round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="pp512/tg128 rounds, each running every engine once, in alternating order",
    )
    parser.add_argument(
        "--reps-long", type=int, default=2, help="timed runs of the 2048-token generation"
    )
    parser.add_argument("--n-batch", type=int, default=512, help="n_batch and n_ubatch")
    parser.add_argument(
        "--flash-attn",
        choices=("on", "off"),
        default="on",
        help="default: on (what llama.cpp's auto picks on CPU; llama-cpp-python has no auto)",
    )
    parser.add_argument("--skip-llama-cpp-python", action="store_true")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    parser.add_argument("--child", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument(
        "--phase", choices=("prepare", "throughput", "overhead"), help=argparse.SUPPRESS
    )
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.phase, args.spec)
        return 0

    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"warning: load average {load:.2f}: another busy process skews the figures",
            file=sys.stderr,
        )
    binaries = build_reference.build(quiet=True)

    skip_reason = "skipped (--skip-llama-cpp-python)" if args.skip_llama_cpp_python else None
    skip_reason = skip_reason or lcp_status()
    if skip_reason is not None:
        print(f"llama-cpp-python: {skip_reason}", file=sys.stderr)
    engines = ["llama-bench", "ours"] + ([] if skip_reason else ["llama-cpp-python"])
    python_engines = engines[1:]

    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    overhead: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # The parent loads nothing itself (see run_process): a child resolves the model and
        # tokenizes the prompts, which every engine then gets as the same token ids.
        prepare_path = write_json(Path(tmp) / "prepare.json", {"model": args.model})
        prepared, _ = run_python_child("ours", "prepare", prepare_path)
        args.model = prepared["model"]
        pp_prompt, tg_prompt = prepared["prompts"]
        spec = {
            "model": args.model,
            "threads": args.threads,
            "n_batch": args.n_batch,
            "flash_attn": args.flash_attn == "on",
            "reps": args.reps,
            "reps_long": args.reps_long,
            "pp_prompt": pp_prompt,
            "tg_prompt": tg_prompt,
        }
        spec_path = write_json(Path(tmp) / "spec.json", spec)
        # interleaved, alternating order: a slow drift of the machine hits every engine alike
        for i in range(args.rounds):
            for name in engines if i % 2 == 0 else engines[::-1]:
                print(f"round {i + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
                if name == "llama-bench":
                    rounds[name].append(throughput_llama_bench(binaries["llama-bench"], args))
                else:
                    rounds[name].append(throughput_python(name, spec_path))
        for name in python_engines:
            print(f"added cost: {name} ...", file=sys.stderr, flush=True)
            overhead[name] = overhead_python(name, spec_path)

    results = {name: merge_rounds(rounds[name]) for name in engines}
    for name in python_engines:
        results[name]["overhead"] = overhead[name]
    verdicts = report(results, args, skip_reason)
    if args.json:
        lcp_version = None if skip_reason else importlib.metadata.version("llama-cpp-python")
        doc = {
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
            },
            "settings": {
                k: v for k, v in vars(args).items() if k not in ("child", "phase", "spec")
            },
            "llama_cpp_python": lcp_version,
            "results": results,
            **verdicts,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
