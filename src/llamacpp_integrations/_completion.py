"""Turning native results into OpenAI ``text_completion`` responses and streams."""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from types import FrameType, TracebackType
from typing import TypeVar

from . import _core
from ._aio import RequestWaiter
from .types import (
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionResponse,
    Timings,
    Usage,
)

__all__ = [
    "CompletionStream",
    "ResponseMeta",
    "await_result",
    "logprobs_block",
    "timings_of",
    "usage_of",
    "wait_result",
]

# How long a blocked call waits before giving Python a chance to deliver Ctrl-C.
WAIT_SLICE_S = 0.05

ChunkT = TypeVar("ChunkT")


def _check_deadline(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (a ``time.monotonic()`` value); raises TimeoutError
    when it has passed. None: no deadline."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the generation ran past its timeout and was cancelled")
    return left


def _wait_slice(deadline: float | None) -> float:
    """How long one native wait may block: the main thread wakes every WAIT_SLICE_S so that
    Python can run a Ctrl-C handler; other threads sleep until the request wakes them (or the
    deadline)."""
    left = _check_deadline(deadline)
    if threading.current_thread() is threading.main_thread():
        return WAIT_SLICE_S if left is None else min(left, WAIT_SLICE_S)
    return -1.0 if left is None else left


class CtrlCLatch:
    """Remembers a Ctrl-C that arrives while the main thread waits on a request.

    Python runs the SIGINT handler at its next check of pending signals. When that check falls
    inside a finalizer the garbage collector runs (a ``__del__``, a weakref callback), the
    ``KeyboardInterrupt`` is printed as "Exception ignored" and dropped, and the generation would
    go on to its end. While the latch is entered, the handler also sets a flag that the wait loop
    checks (:meth:`check`). It is installed only on the main thread and only over Python's
    default handler; a handler of the application's own is left alone.
    """

    __slots__ = ("_installed", "hit")

    def __init__(self) -> None:
        self.hit = False
        self._installed = False

    def __enter__(self) -> CtrlCLatch:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        signal.default_int_handler(signum, frame)

    def check(self) -> None:
        """Raises KeyboardInterrupt when a Ctrl-C came (even one a finalizer swallowed)."""
        if self.hit:
            self.hit = False
            raise KeyboardInterrupt

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # what __enter__ replaced
            self._installed = False


def wait_result(request: _core.Request, deadline: float | None = None) -> _core.CompletionResult:
    """Waits for a request's result without blocking Ctrl-C (streamed events are dropped);
    cancels it on any exception, and raises TimeoutError past ``deadline`` (monotonic)."""
    try:
        with CtrlCLatch() as ctrl_c:
            while not request.done:
                request.wait(_wait_slice(deadline))
                ctrl_c.check()
                while request.next_event() is not None:
                    pass
        return request.result()
    except BaseException:
        request.cancel()
        raise


async def await_result(
    request: _core.Request, deadline: float | None = None
) -> _core.CompletionResult:
    """Awaits a request's result without blocking the event loop (streamed events are dropped);
    cancels the request when the awaiting task is cancelled or fails, or past ``deadline``."""
    waiter = RequestWaiter(request)
    try:
        while not request.done:
            await _wait_until(waiter, deadline)
            while request.next_event() is not None:
                pass
        return request.result()
    except BaseException:
        request.cancel()
        raise
    finally:
        waiter.close()


async def _wait_until(waiter: RequestWaiter, deadline: float | None) -> None:
    left = _check_deadline(deadline)
    if left is None:
        await waiter.wait()
        return
    try:
        await asyncio.wait_for(waiter.wait(), left)
    except asyncio.TimeoutError:
        _check_deadline(deadline)


class ResponseMeta:
    """What a response needs besides the native result: ids, names, echo and logprob options."""

    def __init__(
        self, *, id: str, created: int, model: str, echo_text: str, want_logprobs: bool
    ) -> None:
        self.id = id
        self.created = created
        self.model = model
        self.echo_text = echo_text
        self.want_logprobs = want_logprobs

    def response(self, result: _core.CompletionResult) -> CompletionResponse:
        choice: CompletionChoice = {
            "text": self.echo_text + result.text,
            "index": 0,
            "logprobs": (
                logprobs_block(
                    result.logprobs, result.text.encode(), self.echo_text, result.prompt_logprobs
                )
                if self.want_logprobs
                else None
            ),
            "finish_reason": result.finish_reason,
        }
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage_of(result),
            "timings": timings_of(result),
        }


def logprobs_block(
    entries: Sequence[_core.TokenLogprob],
    completion: bytes,
    echo_text: str = "",
    prompt: Sequence[_core.TokenLogprob] = (),
) -> CompletionLogprobs:
    """The OpenAI completion ``logprobs`` object.

    Offsets count characters from the start of the returned text (the echoed prompt first).
    ``entries[i].offset`` is a byte offset into ``completion``.
    """
    tokens: list[str] = []
    offsets: list[int] = []
    token_logprobs: list[float | None] = []
    top: list[dict[str, float] | None] = []
    pos = 0
    for entry in prompt:  # echo: the first prompt token has no logprob (NaN from the engine)
        predicted = not math.isnan(entry.logprob)
        tokens.append(entry.text)
        offsets.append(pos)
        token_logprobs.append(entry.logprob if predicted else None)
        top.append(_top_dict(entry) if predicted else None)
        pos += len(entry.text)
    base = len(echo_text)
    for entry in entries:
        tokens.append(entry.text)
        offsets.append(base + len(completion[: entry.offset].decode("utf-8", errors="replace")))
        token_logprobs.append(entry.logprob)
        top.append(_top_dict(entry))
    return {
        "tokens": tokens,
        "text_offset": offsets,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
    }


def _top_dict(entry: _core.TokenLogprob) -> dict[str, float]:
    out: dict[str, float] = {}
    for alt in entry.top:
        out.setdefault(alt.text, alt.logprob)
    return out


def usage_of(result: _core.CompletionResult) -> Usage:
    """OpenAI usage (with cached prompt tokens) of a native result."""
    return {
        "prompt_tokens": result.n_prompt,
        "completion_tokens": result.n_completion,
        "total_tokens": result.n_prompt + result.n_completion,
        "prompt_tokens_details": {"cached_tokens": result.n_cached},
        # OpenAI's names for predicted-output tokens: here, speculative decoding's drafts
        "completion_tokens_details": {
            "accepted_prediction_tokens": result.timings.draft_accepted_n,
            "rejected_prediction_tokens": result.timings.draft_n - result.timings.draft_accepted_n,
        },
    }


def timings_of(result: _core.CompletionResult) -> Timings:
    """llama-server style timings of a native result."""
    t = result.timings
    return {
        "cache_n": result.n_cached,
        "prompt_n": t.prompt_n,
        "prompt_ms": t.prompt_ms,
        "prompt_per_second": t.prompt_n / t.prompt_ms * 1e3 if t.prompt_ms > 0 else 0.0,
        "predicted_n": t.eval_n,
        "predicted_ms": t.eval_ms,
        "predicted_per_second": t.eval_n / t.eval_ms * 1e3 if t.eval_ms > 0 else 0.0,
        "decode_ms": t.decode_ms,
        "sample_ms": t.sample_ms,
        "draft_n": t.draft_n,
        "draft_n_accepted": t.draft_accepted_n,
        "image_n": t.image_n,
        "image_encode_ms": t.image_encode_ms,
    }


class RequestStream(Iterator[ChunkT], AsyncIterator[ChunkT]):
    """Base of the streaming iterators, for ``for`` and ``async for`` alike.

    Sync iteration waits for native events without blocking Ctrl-C; async iteration awaits them
    without blocking the event loop. Closing the stream (``close()``/``aclose()``, a ``with``
    block, garbage collection, or cancelling the task that iterates) cancels the generation
    within one token.
    """

    def __init__(self, request: _core.Request) -> None:
        self._request = request
        self._finished = False
        self._waiter: RequestWaiter | None = None
        self.result: _core.CompletionResult | None = None
        """The native result once the stream is exhausted (usage, timings, tokens)."""
        self.deadline: float | None = None
        """A ``time.monotonic()`` time past which iterating cancels and raises TimeoutError."""

    def __iter__(self) -> RequestStream[ChunkT]:
        return self

    def __aiter__(self) -> RequestStream[ChunkT]:
        return self

    async def _anext_event(self) -> _core.StreamEvent | None:
        """Async form of :meth:`_next_event`."""
        request = self._request
        try:
            while True:
                event = request.next_event()
                if event is not None:
                    return event
                if request.done:
                    self.result = request.result()
                    self._close_waiter()
                    return None
                if self._waiter is None:
                    self._waiter = RequestWaiter(request)
                await _wait_until(self._waiter, self.deadline)
        except BaseException:
            self.close()
            raise

    def _close_waiter(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.close()

    def _next_event(self) -> _core.StreamEvent | None:
        """The next streamed event; None at the end, with ``self.result`` set."""
        request = self._request
        try:
            while True:
                event = request.next_event()
                if event is not None:
                    return event
                if request.done:
                    self.result = request.result()
                    return None
                request.wait(_wait_slice(self.deadline))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stops generation; further iteration ends."""
        if not self._finished:
            self._finished = True
            self._request.cancel()
        self._close_waiter()

    async def aclose(self) -> None:
        """Same as :meth:`close`, for ``async with`` and async generator protocols."""
        self.close()

    async def __aenter__(self) -> RequestStream[ChunkT]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __enter__(self) -> RequestStream[ChunkT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        request = getattr(self, "_request", None)
        if request is not None and not getattr(self, "_finished", True):
            request.cancel()


class CompletionStream(RequestStream[CompletionChunk]):
    """Iterator of ``text_completion`` chunks for ``stream=True``; closing it cancels."""

    def __init__(self, request: _core.Request, meta: ResponseMeta) -> None:
        super().__init__(request)
        self._meta = meta
        self._pending_echo = bool(meta.echo_text)
        self._text = b""

    def _chunk(
        self, text: str, logprobs: CompletionLogprobs | None, finish_reason: str | None
    ) -> CompletionChunk:
        return {
            "id": self._meta.id,
            "object": "text_completion",
            "created": self._meta.created,
            "model": self._meta.model,
            "choices": [
                {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}
            ],
        }

    def __next__(self) -> CompletionChunk:
        if self._finished:
            raise StopIteration
        if self._pending_echo:
            self._pending_echo = False
            return self._chunk(self._meta.echo_text, None, None)
        return self._step(self._next_event())

    async def __anext__(self) -> CompletionChunk:
        if self._finished:
            raise StopAsyncIteration
        if self._pending_echo:
            self._pending_echo = False
            return self._chunk(self._meta.echo_text, None, None)
        return self._step(await self._anext_event())

    def response(self) -> CompletionResponse:
        """Waits for the end and returns the whole response, as ``stream=False`` would have."""
        result = wait_result(self._request, self.deadline)
        self._finished = True
        return self._meta.response(result)

    async def aresponse(self) -> CompletionResponse:
        """Awaits the end and returns the whole response, as ``stream=False`` would have."""
        result = await await_result(self._request, self.deadline)
        self._finished = True
        return self._meta.response(result)

    def _step(self, event: _core.StreamEvent | None) -> CompletionChunk:
        if event is not None:
            self._text += event.text.encode()
            logprobs = None
            if self._meta.want_logprobs:
                logprobs = logprobs_block(event.logprobs, self._text, self._meta.echo_text)
            return self._chunk(event.text, logprobs, None)
        assert self.result is not None
        self._finished = True
        chunk = self._chunk("", None, self.result.finish_reason)
        chunk["usage"] = usage_of(self.result)
        chunk["timings"] = timings_of(self.result)
        return chunk
