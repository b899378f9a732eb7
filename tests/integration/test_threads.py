"""The compute thread's thread policy (native/engine/compute.h): threads that were not set
explicitly are halved while other work contends for the cores, and given back when it stops.

Each case runs in a child process, because the policy is process-wide and counts every engine
of the process. The competing work is one busy-looping process per CPU, so whatever the
machine's speed, the compute thread gets about half its wall time on a core while they run.
No figure here is a time: the policy's own counters say what it decided.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from llamacpp_integrations import Llama

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from llamacpp_integrations import Llama, _core

    model_path, explicit = sys.argv[1], sys.argv[2] == "explicit"
    llm = Llama(model_path=model_path, n_ctx=256, n_threads=2 if explicit else None, verbose=False)
    tokens = llm.tokenize(b"Once upon a time")

    def generate_until(done, limit_tokens):
        made = 0
        while made < limit_tokens and not done(_core.compute_stats()):
            out = llm.create_completion(tokens, max_tokens=32, temperature=0.0, ignore_eos=True)
            made += out["usage"]["completion_tokens"]
        return _core.compute_stats()

    report = {"n_threads": llm._engine.n_threads, "start": _core.compute_stats()}
    # each hog spins while this process lives, so a child killed on a timeout leaves none behind
    spin = "import os\\nparent = os.getppid()\\nwhile os.getppid() == parent: pass"
    hog = [sys.executable, "-c", spin]
    hogs = [subprocess.Popen(hog) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.2)
        # explicit threads under contention crawl (the policy is off; 80 ms a token here, seconds on
        # a busier machine): one completion is enough, the default threads were halved within their
        # first 32 computations in every run seen
        report["contended"] = generate_until(lambda s: s["level"] >= 1, 32 if explicit else 2000)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    # the level drops when a probe starts and the probe's verdict comes one window later (it may
    # fall in the next completion): wait for the verdict, not only for the level. Explicit threads
    # are never probed: their level is 0 throughout.
    judged = report["contended"]["restored"]
    report["free"] = generate_until(
        lambda s: s["level"] == 0 and (explicit or s["restored"] > judged), 20000
    )
    print("REPORT " + json.dumps(report), flush=True)
    """
)


def run_child(model_path: str, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, model_path, mode],
        capture_output=True,
        text=True,
        timeout=240,  # under pytest's 300 s, so that the child is killed, not left behind
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])


@pytest.fixture(scope="module")
def default_threads(model_path: str) -> int:
    llm = Llama(model_path=model_path, n_ctx=64, verbose=False)
    try:
        assert llm._engine is not None
        return llm._engine.n_threads
    finally:
        llm.close()


def test_default_threads_halve_under_contention_and_come_back(
    model_path: str, default_threads: int
) -> None:
    if default_threads < 2:
        pytest.skip("one physical core: there are no threads to give up")
    r = run_child(model_path, "default")
    assert r["contended"]["level"] >= 1, r  # halved while the hogs ran
    assert r["contended"]["reductions"] > r["start"]["reductions"], r
    assert r["free"]["level"] == 0, r  # all of them again once the cores were free
    assert r["free"]["restored"] > r["contended"]["restored"], r


def test_explicit_threads_are_never_changed(model_path: str) -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU")
    r = run_child(model_path, "explicit")
    assert r["n_threads"] == 2
    # 32 contended computations later (several windows), nothing was halved: the user's count
    # stands
    assert r["contended"]["count"] >= 32, r
    assert r["contended"]["level"] == 0, r
    assert r["contended"]["reductions"] == r["start"]["reductions"] == 0, r
