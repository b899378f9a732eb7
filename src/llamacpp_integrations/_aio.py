"""Waiting for native requests from asyncio without blocking the event loop.

On POSIX event loops the engine writes a byte to a pipe whenever a request has a new event or
ends, and the loop watches that pipe with ``add_reader``: no thread waits. Loops without
``add_reader`` (the Windows proactor) wait on a worker thread instead, in short slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from . import _core

__all__ = ["RequestWaiter"]

_THREAD_SLICE_S = 0.05


class RequestWaiter:
    """Awaits a native request's next event or end. ``close()`` (or ``async with``) releases
    the pipe; a cancelled ``wait`` cancels nothing by itself (the caller decides)."""

    def __init__(self, request: _core.Request) -> None:
        self._request = request
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._fds: tuple[int, int] | None = None
        if os.name == "posix":
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            try:
                self._loop.add_reader(r, self._on_readable)
            except NotImplementedError:
                os.close(r)
                os.close(w)
            else:
                self._fds = (r, w)
                request.set_notify_fd(w)

    def _on_readable(self) -> None:
        if self._fds is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                os.read(self._fds[0], 4096)
        self._event.set()

    async def wait(self) -> None:
        """Returns once the request has an event to read or has finished."""
        if self._fds is None:
            while not await asyncio.to_thread(self._request.wait, _THREAD_SLICE_S):
                pass
            return
        while True:
            self._event.clear()
            # a byte written after this check makes the pipe readable, which sets the event
            if self._request.ready:
                return
            await self._event.wait()

    def close(self) -> None:
        fds, self._fds = self._fds, None
        if fds is None:
            return
        self._request.set_notify_fd(-1)  # the engine no longer writes to w after this returns
        if not self._loop.is_closed():
            self._loop.remove_reader(fds[0])
        os.close(fds[0])
        os.close(fds[1])

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
