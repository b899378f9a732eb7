#!/usr/bin/env python3
"""Two processes decoding at once on few cores: tokens/s alone and side by side.

Each configuration is measured in two ways, in alternating rounds:

* alone: one process generates ``--runs`` x ``--tokens`` tokens (greedy, EOS ignored),
  ``--alone-reps`` times per round, alternating between the configurations;
* pair: two processes, both loaded and warmed up first, start generating at the same moment.

A process reports its generation speed (tokens / wall seconds of its generate loop). The pair's
figure is the mean of the two processes' speeds, and ``pair/alone`` is what each process keeps
of its speed alone when another one decodes beside it. A process that does not finish within
``--timeout`` seconds is counted at the speed it would have had finishing then (a bound).

Configurations are environments for the child processes:

* ``ours``: the package's defaults (nothing set);
* ``old``: the same thread count given explicitly as ``n_threads``, which turns the thread
  policy off (what every version before it ran);
* any ``NAME=VALUE[,NAME=VALUE]`` given with ``--candidate``, to compare settings.

Run ``python benchmarks/bench_contention.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULT_MARKER = "BENCH_RESULT "
READY_MARKER = "READY"
FIXED = "fixed-threads"  # a configuration key that is not an environment variable
PROMPT = "Write a long story about a lighthouse keeper and the sea."

# Targets from the issue: each of two processes keeps >= 0.35x of its speed alone, and one
# process alone keeps >= 0.97x of the old default's speed.
TARGET_PAIR = 0.35
TARGET_ALONE = 0.97

CONFIGS: dict[str, dict[str, str]] = {
    "ours": {},
    "old": {FIXED: "1"},
}


def child(args: argparse.Namespace) -> None:
    """One process: load, warm up, wait for the go line on stdin, generate, report."""
    from llamacpp_integrations import Llama, _core, default_model_path

    def load(threads: int | None) -> Llama:
        return Llama(
            model_path=args.model or str(default_model_path()),
            n_ctx=args.tokens + 64,
            n_threads=threads,
            verbose=False,
        )

    threads = args.threads or None
    if args.fixed and threads is None:
        # the default count, given explicitly: what every version before the thread policy ran
        probe = load(None)
        assert probe._engine is not None
        threads = probe._engine.n_threads
        probe.close()
    llm = load(threads)
    tokens = llm.tokenize(PROMPT.encode())
    llm.create_completion(tokens, max_tokens=8, temperature=0.0, ignore_eos=True)
    print(READY_MARKER, flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    done = 0
    for _ in range(args.runs):
        out = llm.create_completion(
            tokens, max_tokens=args.tokens, temperature=0.0, ignore_eos=True
        )
        done += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - started
    stats = _core.compute_stats()
    result = {"tokens": done, "seconds": seconds, "stats": stats}
    print(RESULT_MARKER + json.dumps(result), flush=True)
    llm.close()


def parse_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--candidate {text!r}: expected NAME=VALUE[,NAME=VALUE]")
        env[name] = value
    return env


def run_processes(count: int, env_extra: dict[str, str], args: argparse.Namespace) -> list[float]:
    """Start ``count`` children, release them together, return each one's tokens/s."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update({k: v for k, v in env_extra.items() if k != FIXED})
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--runs",
        str(args.runs),
        "--tokens",
        str(args.tokens),
    ]
    if FIXED in env_extra:
        cmd.append("--fixed")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.model:
        cmd += ["--model", args.model]
    procs = [
        subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    try:
        for p in procs:  # loaded and warmed up, one after the other
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != READY_MARKER:
                raise RuntimeError(f"child did not start: {line!r}")
        started = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        speeds = []
        expected = args.runs * args.tokens
        for p in procs:
            remaining = args.timeout - (time.perf_counter() - started)
            try:
                out, _ = p.communicate(timeout=max(remaining, 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                speeds.append(expected / args.timeout)  # an upper bound on its speed
                continue
            lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARKER)]
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"child failed with status {p.returncode}")
            result = json.loads(lines[-1][len(RESULT_MARKER) :])
            speeds.append(result["tokens"] / result["seconds"])
            if args.verbose:
                print(f"    {count} process(es), {env_extra}: {result['stats']}")
        return speeds
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="generations per process")
    parser.add_argument(
        "--alone-reps", type=int, default=3, help="processes alone per configuration and round"
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens per generation")
    parser.add_argument("--threads", type=int, default=0, help="n_threads (default: the package's)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per measurement")
    parser.add_argument("--model", default="")
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        help="an environment NAME=VALUE[,NAME=VALUE] to measure too",
    )
    parser.add_argument("--only", action="append", default=[], help="measure only these configs")
    parser.add_argument("--json", default="")
    parser.add_argument("--verbose", action="store_true", help="print each process's thread policy")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fixed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    configs = {name: env for name, env in CONFIGS.items() if not args.only or name in args.only}
    for text in args.candidate:
        configs[text] = parse_env(text)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}; other programs will skew the figures")
    print(
        f"{os.cpu_count()} CPUs; {args.runs} x {args.tokens} tokens per process, "
        f"{args.rounds} rounds"
    )

    alone: dict[str, list[float]] = {name: [] for name in configs}  # every sample
    alone_round: dict[str, list[float]] = {name: [] for name in configs}  # median per round
    pair: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        # alone: short and noisy, so several samples, alternating between the configurations
        samples: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(args.alone_reps):
            for name in order if rep % 2 == 0 else order[::-1]:
                samples[name].append(run_processes(1, configs[name], args)[0])
        for name in order:
            a = statistics.median(samples[name])
            p = run_processes(2, configs[name], args)
            alone[name] += samples[name]
            alone_round[name].append(a)
            pair[name].append(statistics.mean(p))
            print(
                f"round {r + 1} {name:>20}: alone "
                + " / ".join(f"{x:.1f}" for x in samples[name])
                + " tok/s, pair "
                + " / ".join(f"{x:.1f}" for x in p)
                + f" tok/s ({statistics.mean(p) / a:.2f}x)",
                flush=True,
            )

    base = "old" if "old" in configs else None
    print()
    print("| config | alone tok/s | pair tok/s each | pair/alone | alone vs old |")
    print("|---|---:|---:|---:|---:|")
    summary = {}
    for name in names:
        a, p = statistics.median(alone[name]), statistics.median(pair[name])
        ratios = [pp / aa for pp, aa in zip(pair[name], alone_round[name], strict=True)]
        vs_old = (
            statistics.median(x / y for x, y in zip(alone[name], alone[base], strict=True))
            if base
            else float("nan")
        )
        summary[name] = {
            "alone": alone[name],
            "pair": pair[name],
            "pair_over_alone": ratios,
            "alone_over_old": vs_old,
        }
        print(f"| {name} | {a:.1f} | {p:.1f} | {statistics.median(ratios):.2f} | {vs_old:.2f} |")
    if "ours" in summary:
        s = summary["ours"]
        ok_pair = statistics.median(s["pair_over_alone"]) >= TARGET_PAIR
        ok_alone = base is None or s["alone_over_old"] >= TARGET_ALONE
        print(
            f"\nours: pair/alone {statistics.median(s['pair_over_alone']):.2f} "
            f"(target >= {TARGET_PAIR}: {'met' if ok_pair else 'NOT met'}), alone vs old "
            f"{s['alone_over_old']:.2f} (target >= {TARGET_ALONE}: "
            f"{'met' if ok_alone else 'NOT met'})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
