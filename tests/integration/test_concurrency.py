"""Threads, cancellation and Ctrl-C: nothing hangs, nothing crashes, the engine stays usable."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from llamacpp_integrations import Llama, _core
from llamacpp_integrations._completion import wait_result

pytestmark = pytest.mark.timeout(300)  # a hang here means deadlock


def text_of(out: object) -> str:
    assert isinstance(out, dict)
    return str(out["choices"][0]["text"])


def test_many_threads_share_one_llama(llm: Llama) -> None:
    """16 requests from 8 threads on one Llama (4 decoded at a time, the rest queued) all finish.
    Exact equality with the answers alone is asserted from cold caches in test_batching.py, and
    cross-talk there too. Here caches are warm and arrivals uneven: a sequence's KV cells then
    sit out of position order (holes left by others), llama.cpp accumulates attention in another
    order, and near-tied greedy choices (top two within 0.05 nats) can flip."""
    prompts = [f"Fact number {i}: the" for i in range(8)]
    alone = {p: text_of(llm(p, max_tokens=12, temperature=0)) for p in prompts}
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(
            pool.map(lambda p: text_of(llm(p, max_tokens=12, temperature=0)), prompts * 2)
        )
    assert all(together)
    same = sum(t == alone[p] for t, p in zip(together, prompts * 2, strict=True))
    assert same >= 8, (same, together)


def test_other_python_threads_run_during_generation(llm: Llama) -> None:
    ticks = 0
    stop = threading.Event()

    def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    started = time.perf_counter()
    llm("Write a long poem about the sea.", max_tokens=96, temperature=0, ignore_eos=True)
    elapsed = time.perf_counter() - started
    stop.set()
    t.join()
    # a thread sleeping 1 ms per tick managed at least a third of the ticks it could
    assert ticks >= elapsed / 0.001 / 3


def assert_cancelled(native: _core.Request) -> None:
    """The native request ended as cancelled, long before its 2000 tokens (it would still be
    generating, or end with "length", if cancelling did not work)."""
    assert native.wait(60) and native.done
    result = native.result()
    assert result.finish_reason == "cancelled", result.finish_reason
    assert result.n_completion < 1000


def test_closing_a_stream_cancels_it_and_frees_the_engine(llm: Llama) -> None:
    stream = llm(
        "Tell me everything about the ocean.", max_tokens=2000, ignore_eos=True, stream=True
    )
    first = next(stream)
    assert first["choices"][0]["text"] is not None
    native = stream._request
    stream.close()
    assert list(stream) == []
    assert_cancelled(native)
    out = llm("Hello", max_tokens=2, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1


def test_exception_in_the_consumer_cancels_the_stream(llm: Llama) -> None:
    stream = llm("Count to a thousand:", max_tokens=2000, ignore_eos=True, stream=True)
    native = stream._request
    with pytest.raises(ValueError, match="consumer failed"), stream:
        for _ in stream:
            raise ValueError("consumer failed")
    assert_cancelled(native)  # the 2000-token generation did not go on


def test_dropping_a_stream_cancels_it(llm: Llama) -> None:
    stream = llm("Write forever:", max_tokens=2000, ignore_eos=True, stream=True)
    next(stream)
    native = stream._request
    del stream
    assert_cancelled(native)
    out = llm("Hello", max_tokens=2, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1


def test_cancelling_a_long_prompt_stops_inside_the_prompt(model_path: str) -> None:
    with Llama(model_path=model_path, n_ctx=4096, n_batch=4096, n_ubatch=512) as big:
        tokens = big.tokenize("The quick brown fox jumps over the lazy dog. " * 300)[:4000]
        engine = big.native_engine
        request = engine.submit(tokens, big.sampling_params(temperature=0), max_tokens=4)
        time.sleep(0.2)
        request.cancel()
        result = request.result()
        assert result.finish_reason == "cancelled"
        # the single 4000-token decode call was aborted part-way: the cache holds a prefix only
        cached = len(engine.cached_tokens())
        assert cached < len(tokens)
        out = big("Hello", max_tokens=2, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_ctrl_c_interrupts_generation(llm: Llama) -> None:
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    before = _core.compute_count()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        llm("Write a very long essay.", max_tokens=5000, ignore_eos=True)
    timer.join()
    # kv_used() waits until no request is active: a generation that went on after Ctrl-C would
    # run to the end of its 2048-token context first (decodes, so a slow machine cannot fail it)
    llm.native_engine.kv_used()
    assert _core.compute_count() - before < 1000
    out = llm("Hello", max_tokens=2, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1


class _SwallowsCtrlC:
    """Garbage whose finalizer is where Python happens to deliver a Ctrl-C: the handler runs
    inside ``__del__``, and the KeyboardInterrupt it raises is printed and dropped."""

    def __init__(self) -> None:
        self.cycle = self  # only the garbage collector frees it

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):  # the pending signal's handler runs in this loop
            pass


class _CollectsOnThirdWait:
    """The real request, with a garbage collection on its third wait: what the collector does
    at some allocation of a long wait, placed where the test can see it."""

    def __init__(self, request: _core.Request) -> None:
        self._request, self._waits = request, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._request, name)

    def wait(self, timeout: float) -> bool:
        self._waits += 1
        if self._waits == 3:
            _SwallowsCtrlC()
            gc.collect()
        return self._request.wait(timeout)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_that_a_finalizer_swallows_still_interrupts(llm: Llama) -> None:
    # the race behind a once-failing run of the test above: the Ctrl-C landed in a __del__
    handle = llm.submit_completion("Write a very long essay.", max_tokens=5000, ignore_eos=True)
    native = handle._request
    with pytest.raises(KeyboardInterrupt):
        wait_result(_CollectsOnThirdWait(native))  # type: ignore[arg-type]
    result = native.result()
    assert result.finish_reason == "cancelled"
    assert result.n_completion < 1000  # stopped at the Ctrl-C, not at the end of the context
