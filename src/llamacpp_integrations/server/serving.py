"""The serving layer: a validated request in, the engine call, OpenAI bodies and SSE out.

Each served model is a :class:`ServedModel`: one ``Llama`` (its own engine, slots and
continuous batching) and a bound on the requests it holds. Requests never take a global lock:
they are submitted to the engine at once and awaited on its event pipe, many at a time.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from .._chat import ChatCompletionStream
from .._completion import CompletionStream, RequestStream
from .._offload import renders_in_thread
from .._sampling import SAMPLING_ARGS
from ..llama import Llama
from .errors import APIError
from .metrics import Metrics
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    SamplingFields,
)
from .settings import ModelConfig, ServerSettings

__all__ = ["ServedModel", "Serving"]

# the sampling keywords Llama takes, less the two the server maps itself (per-choice seeds,
# string token ids in logit_bias), plus stop strings and a grammar
_SAMPLING = (*(k for k in SAMPLING_ARGS if k not in ("seed", "logit_bias")), "stop", "grammar")


@dataclass
class ServedModel:
    alias: str
    llama: Llama
    config: ModelConfig
    limit: int
    created: int = field(default_factory=lambda: int(time.time()))
    inflight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, n: int, metrics: Metrics) -> None:
        """Counts n more requests in, or raises 503 when the slots and the queue are full."""
        with self.lock:
            if self.inflight + n > self.limit:
                raise APIError(
                    503,
                    f"model '{self.alias}' is busy: {self.inflight} requests are running or "
                    "queued; retry shortly",
                    "server_busy",
                    code="queue_full",
                    headers={"Retry-After": "1"},
                )
            self.inflight += n
            metrics.set_load(self.alias, self.inflight, self.llama.native_engine.n_seq_max)

    def release(self, n: int, metrics: Metrics) -> None:
        with self.lock:
            self.inflight -= n
            metrics.set_load(self.alias, self.inflight, self.llama.native_engine.n_seq_max)


def _sampling_kwargs(req: SamplingFields) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(req, k) for k in _SAMPLING if getattr(req, k) is not None}
    if req.logit_bias:
        try:
            out["logit_bias"] = {int(k): float(v) for k, v in req.logit_bias.items()}
        except ValueError as e:
            raise APIError(400, "logit_bias keys must be token ids", param="logit_bias") from e
    if req.ignore_eos:
        out["ignore_eos"] = True
    return out


def _seed_for(req: SamplingFields, i: int) -> dict[str, Any]:
    # choice i of n gets its own seed, so that sampled choices differ yet stay reproducible
    if req.seed is not None:
        return {"seed": req.seed + i}
    return {}


class Serving:
    """The served models and the request handlers (no HTTP types here beyond errors)."""

    def __init__(self, settings: ServerSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.ready = False
        self.load_error: str | None = None

    # ------------------------------------------------------------------ models

    def load(self) -> None:
        """Loads every configured model (in a worker thread, while /health says 503)."""
        from ..models import default_model_path

        s = self.settings
        try:
            for cfg in s.model_configs():
                path = cfg.path or default_model_path()
                alias = cfg.alias or os.path.basename(path).removesuffix(".gguf")
                if alias in self.models:
                    raise ValueError(f"two models are served as '{alias}'; give each an alias")
                kwargs = s.llama_kwargs(cfg)
                llama = Llama(model_path=path, **kwargs)
                limit = llama.native_engine.n_seq_max + s.max_queue
                self.models[alias] = ServedModel(alias, llama, cfg, limit)
                self.metrics.set_load(alias, 0, llama.native_engine.n_seq_max)
            self.ready = True
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
            raise

    def close(self) -> None:
        for m in self.models.values():
            m.llama.close()

    def get(self, name: str | None) -> ServedModel:
        if not self.ready:
            raise APIError(
                503,
                "the models are still loading",
                "server_loading",
                code="loading",
                headers={"Retry-After": "1"},
            )
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise APIError(
                400,
                "model is required: this server serves " + ", ".join(self.models),
                param="model",
            )
        model = self.models.get(name)
        if model is None:
            raise APIError(
                404,
                f"the model '{name}' does not exist; served: {', '.join(self.models)}",
                "not_found_error",
                param="model",
                code="model_not_found",
            )
        return model

    # ------------------------------------------------------------------ helpers

    def _deadline(self) -> float | None:
        t = self.settings.request_timeout
        return None if t is None else time.monotonic() + t

    async def _gather(self, handles: Sequence[RequestStream[Any]]) -> list[Any]:
        try:
            return list(await asyncio.gather(*(h.aresponse() for h in handles)))  # type: ignore[attr-defined]
        except TimeoutError as e:
            raise APIError(
                504,
                "the generation ran past --request-timeout and was cancelled",
                "timeout_error",
                code="timeout",
            ) from e
        finally:
            for h in handles:
                h.close()

    def _count(
        self,
        model: ServedModel,
        usage: dict[str, Any],
        timings: Sequence[dict[str, Any]],
        started: float,
    ) -> None:
        self.metrics.tokens(model.alias, usage["prompt_tokens"], usage["completion_tokens"])
        wall = time.perf_counter() - started
        for t in timings:
            predicted_s = t["predicted_ms"] / 1e3
            self.metrics.first_token(model.alias, max(0.0, wall - predicted_s))
            if t["predicted_n"] > 0:
                self.metrics.inter_token(model.alias, predicted_s / t["predicted_n"])

    # ------------------------------------------------------------------ chat

    def _chat_kwargs(self, req: ChatCompletionRequest) -> dict[str, Any]:
        kw = _sampling_kwargs(req)
        max_tokens = (
            req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        )
        if max_tokens is not None:
            kw["max_tokens"] = max_tokens
        for name in (
            "tools",
            "tool_choice",
            "functions",
            "function_call",
            "response_format",
            "logprobs",
            "top_logprobs",
            "reasoning_format",
            "chat_template_kwargs",
            "parallel_tool_calls",
        ):
            value = getattr(req, name)
            if value is not None:
                kw[name] = value
        return kw

    async def start_chat(
        self, model: ServedModel, req: ChatCompletionRequest
    ) -> list[ChatCompletionStream]:
        kw = self._chat_kwargs(req)

        def submit() -> list[ChatCompletionStream]:
            return self._submit_all(
                req,
                [req.messages],
                lambda messages, seed: model.llama.submit_chat_completion(
                    messages, stream=req.stream, model=model.alias, **kw, **seed
                ),
            )

        if renders_in_thread(req.messages, req.tools or req.functions):
            # images (decoded, checked and preprocessed, URLs fetched) and long conversations
            # (rendered first under limits) take milliseconds to seconds: off the event loop,
            # which serves the other requests meanwhile
            return await asyncio.to_thread(submit)
        return submit()

    def _submit_all(self, req: SamplingFields, inputs: Sequence[Any], submit: Any) -> list[Any]:
        """``req.n`` requests per input (choice i seeded ``seed + i``), all or none: a failure
        closes those already queued."""
        handles: list[Any] = []
        try:
            for x in inputs:
                for i in range(req.n):
                    h = submit(x, _seed_for(req, i))
                    h.deadline = self._deadline()
                    handles.append(h)
        except BaseException:
            for h in handles:
                h.close()
            raise
        return handles

    async def chat(self, model: ServedModel, req: ChatCompletionRequest) -> dict[str, Any]:
        started = time.perf_counter()
        return await self._merged(model, await self.start_chat(model, req), started)

    async def _merged(
        self, model: ServedModel, handles: Sequence[RequestStream[Any]], started: float
    ) -> dict[str, Any]:
        """One response whose choices are the handles' (index = handle index), usage summed."""
        responses = await self._gather(handles)
        merged = dict(responses[0])
        merged["choices"] = [{**r["choices"][0], "index": i} for i, r in enumerate(responses)]
        merged["usage"] = _sum_usage([r["usage"] for r in responses])
        timings = [r["timings"] for r in responses]
        if len(responses) > 1:  # llama-server's "timings" describe one generation
            merged.pop("timings", None)
        self._count(model, merged["usage"], timings, started)
        return merged

    # ------------------------------------------------------------------ completions

    def _prompts(self, req: CompletionRequest) -> list[str | list[int]]:
        p = req.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt is empty", param="prompt")
        if all(isinstance(x, str) for x in p):
            return list(p)  # type: ignore[arg-type]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return [list(cast(list[int], x)) for x in p]

    def start_completion(
        self, model: ServedModel, req: CompletionRequest
    ) -> list[CompletionStream]:
        kw = _sampling_kwargs(req)
        kw["max_tokens"] = 16 if req.max_tokens is None else req.max_tokens
        if req.suffix is not None:
            kw["suffix"] = req.suffix
        if req.echo:
            kw["echo"] = True
        if req.logprobs is not None:
            kw["logprobs"] = req.logprobs
        return self._submit_all(
            req,
            self._prompts(req),
            lambda prompt, seed: model.llama.submit_completion(
                prompt, stream=req.stream, model=model.alias, **kw, **seed
            ),
        )

    def n_completion_requests(self, req: CompletionRequest) -> int:
        return len(self._prompts(req)) * req.n

    async def completion(self, model: ServedModel, req: CompletionRequest) -> dict[str, Any]:
        started = time.perf_counter()
        return await self._merged(model, self.start_completion(model, req), started)

    # ------------------------------------------------------------------ streams

    async def sse(
        self, model: ServedModel, handles: Sequence[RequestStream[Any]], include_usage: bool
    ) -> AsyncIterator[bytes]:
        """``data: {...}`` lines of every handle's chunks (choice index = handle index), then
        the usage chunk when asked, then ``data: [DONE]``. Cancelling the iteration (the client
        went away) cancels every generation at once."""
        started = time.perf_counter()
        usages: list[dict[str, Any]] = []
        timings: list[dict[str, Any]] = []
        first_seen = False
        last_chunk: dict[str, Any] | None = None
        try:
            async for i, chunk in _merged_chunks(handles):
                # the chunk is ours to change: a fresh dict from the stream
                if "usage" in chunk:
                    usages.append(chunk.pop("usage"))
                if "timings" in chunk:
                    timings.append(chunk.pop("timings"))
                for choice in chunk["choices"]:
                    choice["index"] = i
                if not first_seen:
                    first_seen = True
                    self.metrics.first_token(model.alias, time.perf_counter() - started)
                last_chunk = chunk
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            usage = _sum_usage(usages) if usages else None
            if usage is not None:
                self.metrics.tokens(model.alias, usage["prompt_tokens"], usage["completion_tokens"])
                for t in timings:
                    if t["predicted_n"] > 0:
                        self.metrics.inter_token(
                            model.alias, t["predicted_ms"] / 1e3 / t["predicted_n"]
                        )
            if include_usage and usage is not None and last_chunk is not None:
                tail = {k: v for k, v in last_chunk.items() if k != "choices"}
                tail["choices"] = []
                tail["usage"] = usage
                yield b"data: " + orjson.dumps(tail) + b"\n\n"
            yield b"data: [DONE]\n\n"
        except TimeoutError:
            timeout = APIError(
                504,
                "the generation ran past --request-timeout and was cancelled",
                "timeout_error",
                code="timeout",
            )
            yield b"data: " + orjson.dumps(timeout.body()) + b"\n\n"
        except APIError as e:
            yield b"data: " + orjson.dumps(e.body()) + b"\n\n"
        finally:
            for h in handles:
                h.close()

    # ------------------------------------------------------------------ embeddings

    async def embeddings(self, model: ServedModel, req: EmbeddingRequest) -> dict[str, Any]:
        llama = model.llama
        if req.dimensions is not None and req.dimensions != llama.n_embd():
            raise APIError(
                400,
                f"dimensions must be {llama.n_embd()} for '{model.alias}' (the "
                "model's embedding width) or omitted",
                param="dimensions",
            )
        inp = req.input
        if isinstance(inp, str):
            inputs: list[str | list[int]] = [inp]
        elif inp and all(isinstance(x, int) for x in inp):
            inputs = [list(inp)]  # type: ignore[arg-type]
        else:
            inputs = list(inp)  # type: ignore[arg-type]
        if not inputs:
            raise APIError(400, "input is empty", param="input")
        for i, x in enumerate(inputs):
            if (isinstance(x, str) and not x) or (isinstance(x, list) and not x):
                raise APIError(400, f"input[{i}] is empty", param="input")
        tokens = [llama.tokenize(x) if isinstance(x, str) else list(x) for x in inputs]
        vectors = await asyncio.to_thread(llama.native_engine.embed, tokens, 2)
        data = []
        for i, v in enumerate(vectors):
            emb: list[float] | str = list(v)
            if req.encoding_format == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(len(t) for t in tokens)
        self.metrics.tokens(model.alias, n, 0)
        return {
            "object": "list",
            "data": data,
            "model": model.alias,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }


async def _merged_chunks(
    handles: Sequence[RequestStream[Any]],
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """(handle index, chunk) of every handle as chunks arrive; one handle is iterated directly,
    several are pumped into one queue."""
    if len(handles) == 1:
        async for chunk in handles[0]:
            yield 0, chunk
        return
    queue: asyncio.Queue[tuple[int, dict[str, Any] | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, h: RequestStream[Any]) -> None:
        try:
            async for chunk in h:
                await queue.put((i, chunk))
            await queue.put((i, None))
        except BaseException as e:
            await queue.put((i, e))

    tasks = [asyncio.ensure_future(pump(i, h)) for i, h in enumerate(handles)]
    try:
        remaining = len(handles)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()


def _sum_usage(usages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    prompt = sum(int(u["prompt_tokens"]) for u in usages)
    completion = sum(int(u["completion_tokens"]) for u in usages)
    cached = sum(int(u["prompt_tokens_details"]["cached_tokens"]) for u in usages)
    details = [u["completion_tokens_details"] for u in usages]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {
            key: sum(int(d[key]) for d in details)
            for key in ("accepted_prediction_tokens", "rejected_prediction_tokens")
        },
    }
