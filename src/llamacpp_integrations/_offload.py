"""Which chat submits an event loop hands to a worker thread.

Submitting renders the messages and queues the request, which takes microseconds, except for
two kinds of chat: those with images (decoded, checked and preprocessed first, URLs fetched) and
those larger than the conversation every chat template renders once under limits
(``_core.trial_render_size()``), which the engine first renders again in a child process under
the same limits (``native/engine/template_check.h``): milliseconds to seconds, for a template
whose work grows faster than its input. ``asubmit_chat_completion`` and the server submit those
from a thread, so that the event loop serves other requests meanwhile.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from . import _core
from ._images import has_images

__all__ = ["renders_in_thread"]


@functools.cache
def _trial() -> dict[str, int]:
    return _core.trial_render_size()


def _text_size(value: Any, limit: int) -> int:
    """Characters of the strings in value (dicts, lists, keys), counting stops past limit."""
    if isinstance(value, str):
        return len(value)
    total = 0
    if isinstance(value, Mapping):
        for k, v in value.items():
            total += len(str(k)) + _text_size(v, limit - total)
            if total > limit:
                break
    elif isinstance(value, (list, tuple)):
        for v in value:
            total += _text_size(v, limit - total)
            if total > limit:
                break
    return total


def _deeper_than(value: Any, depth: int) -> bool:
    """Whether lists and dicts nest in value more than depth deep."""
    if not isinstance(value, (Mapping, list, tuple)):
        return False
    if depth == 0:
        return True
    items = value.values() if isinstance(value, Mapping) else value
    return any(_deeper_than(v, depth - 1) for v in items)


def renders_in_thread(messages: Sequence[Any], tools: Sequence[Any] | None = None) -> bool:
    """Whether submitting this chat may block for long enough to keep it off an event loop:
    images, or a conversation the engine renders first in a child process (larger than the
    trial's in any measure). Errs towards a thread: more text than the trial's longest message,
    in all, is enough; or nesting deeper than the trial's; or tools that are not a list (they
    are not walked here, and a generator must not be consumed)."""
    trial = _trial()
    tools = [] if tools is None else tools
    if not isinstance(messages, (list, tuple)) or not isinstance(tools, (list, tuple)):
        return True
    if len(messages) > trial["messages"] or len(tools) > trial["tools"]:
        return True
    limit = trial["longest"]
    return (
        _text_size(messages, limit) + _text_size(tools, limit) > limit
        or _deeper_than(messages, trial["depth"])
        or _deeper_than(tools, trial["depth"])
        or has_images(messages)
    )
