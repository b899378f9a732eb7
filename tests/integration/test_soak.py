"""Soak: nothing grows with use, and exit does not wait for running requests.

``tests/soak.py`` runs in a child process: 100 load/close cycles, then 10,000 mixed requests on
one model from 8 threads (completions greedy and sampled, chat, streams closed early, cancelled
requests, tokenize/detokenize, embeddings, and requests that must fail). Resident memory, open
file descriptors and threads are sampled after a warm-up (the first tenth) and at the end; none
may grow by 5% or more.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SOAK = Path(__file__).resolve().parents[1] / "soak.py"
GROWTH_LIMIT = 0.05


def run_soak(model_path: str, cycles: int, requests: int) -> dict:
    cmd = [sys.executable, str(SOAK), "--model", model_path, "--cycles", str(cycles)]
    cmd += ["--requests", str(requests), "--threads", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SOAK "))
    return json.loads(line[len("SOAK ") :])


def growth(phase: dict, key: str) -> float:
    before, after = phase["after_warmup"][key], phase["end"][key]
    return (after - before) / before


@pytest.fixture(scope="module")
def soak(model_path: str) -> dict:
    return run_soak(model_path, cycles=100, requests=10_000)


def test_load_close_cycles_leak_nothing(soak: dict) -> None:
    cycles = soak["cycles"]
    for key in ("rss_kib", "fds", "threads"):
        assert growth(cycles, key) < GROWTH_LIMIT, (key, cycles)
    # a closed model leaves no thread and no file behind: back to where the first load began,
    # but for the process-wide compute thread (and OpenMP's team) that stay for the next one
    assert cycles["end"]["fds"] == soak["start"]["fds"], soak
    assert cycles["end"]["threads"] <= soak["start"]["threads"] + 2, soak


def test_ten_thousand_mixed_requests_leak_nothing(soak: dict) -> None:
    mixed = soak["mixed"]
    assert mixed["failures"] == []
    assert sum(mixed["done"].values()) == 10_000
    assert len(mixed["done"]) == 9  # every kind ran
    for key in ("rss_kib", "fds", "threads"):
        assert growth(mixed, key) < GROWTH_LIMIT, (key, mixed)
    # closing the model gives its threads and files back
    assert mixed["closed"]["fds"] == soak["start"]["fds"], soak
    assert mixed["closed"]["threads"] <= soak["start"]["threads"] + 2, soak


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from llamacpp_integrations import Llama

    llm = Llama(model_path=sys.argv[1], n_ctx=4096, n_seq_max=4, verbose=False)
    long = dict(max_tokens=4000, ignore_eos=True)
    started = threading.Event()

    def generate():
        n = 0
        for _ in llm("Write a very long essay.", stream=True, **long):
            n += 1
            if n == 1:
                t0 = time.monotonic()
            if n == 33:
                print(f"RATE {32 / (time.monotonic() - t0)}", flush=True)
                started.set()
        print(f"ENDED {n}", flush=True)

    threading.Thread(target=generate, daemon=True).start()  # a daemon thread waiting on a stream
    stream = llm("Write a very long essay.", stream=True, **long)
    next(iter(stream))  # main's own stream, left open
    handle = llm.submit_completion("Write a very long essay.", **long)  # a handle, never read
    started.wait()
    print("RUNNING", flush=True)
    # the interpreter exits now, with three 4000-token generations under way
    """
)


def test_interpreter_exit_with_requests_running_is_prompt(model_path: str) -> None:
    """CPython ends a daemon thread that takes the GIL back at exit with pthread_exit, which
    aborted the process in our GIL-reacquiring destructor; and a worker still decoding when
    the process's static objects went away crashed it (SIGSEGV in ggml)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT, model_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    rate = float(proc.stdout.readline().split()[1])  # tokens/s of one stream, on this machine
    assert proc.stdout.readline().strip() == "RUNNING"
    running = time.monotonic()
    out, err = proc.communicate(timeout=600)
    exited_after = time.monotonic() - running
    assert proc.returncode == 0, err[-3000:]
    assert err == "", err[-3000:]
    assert "ENDED" not in out  # the daemon thread's generation did not run to its end first...
    # ...nor did the exit wait for it: what is left would take ~3900 / rate seconds
    assert exited_after < 0.25 * 3900 / rate, (exited_after, rate)
