"""The routers: OpenAI's endpoints, and the server's own (health, metrics, tokenize). Route
functions only pick the model, admit the request and hand it to the serving layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .errors import APIError
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    ErrorBody,
    ModelCard,
    ModelList,
    TokenizeRequest,
)
from .serving import ServedModel, Serving

__all__ = ["extra_router", "openai_router"]

T = TypeVar("T")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 413, 503, 504)
}

openai_router = APIRouter(prefix="/v1", responses=ERRORS)
extra_router = APIRouter()


def serving_of(request: Request) -> Serving:
    return request.app.state.serving  # type: ignore[no-any-return]


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Runs work, cancelling it (and so its generations) if the client goes away first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise APIError(499, "the client closed the connection", "client_closed")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


def stream_response(
    model: ServedModel, serving: Serving, chunks: AsyncIterator[bytes], n: int
) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            async for line in chunks:
                yield line
        finally:
            model.release(n, serving.metrics)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@openai_router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    """Chat completions: tools, tool_choice, response_format, grammar, logprobs, n, streaming."""
    serving = serving_of(request)
    model = serving.get(body.model)
    model.admit(body.n, serving.metrics)
    if body.stream:
        try:
            handles = await serving.start_chat(model, body)
        except BaseException:
            model.release(body.n, serving.metrics)
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return stream_response(model, serving, serving.sse(model, handles, include_usage), body.n)
    try:
        return JSONResponse(await until_disconnect(request, serving.chat(model, body)))
    finally:
        model.release(body.n, serving.metrics)


@openai_router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    """Text completions: prompt as text, texts or token ids, suffix (fill-in-the-middle), echo,
    logprobs, n, streaming."""
    serving = serving_of(request)
    model = serving.get(body.model)
    n = serving.n_completion_requests(body)
    model.admit(n, serving.metrics)
    if body.stream:
        try:
            handles = serving.start_completion(model, body)
        except BaseException:
            model.release(n, serving.metrics)
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return stream_response(model, serving, serving.sse(model, handles, include_usage), n)
    try:
        return JSONResponse(await until_disconnect(request, serving.completion(model, body)))
    finally:
        model.release(n, serving.metrics)


@openai_router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """Embeddings of a string, strings or token arrays; float or base64."""
    serving = serving_of(request)
    model = serving.get(body.model)
    model.admit(1, serving.metrics)
    try:
        return JSONResponse(await serving.embeddings(model, body))
    finally:
        model.release(1, serving.metrics)


def _card(m: ServedModel) -> ModelCard:
    llama = m.llama
    return ModelCard(
        id=m.alias,
        created=m.created,
        meta={
            "n_ctx": llama.n_ctx(),
            "n_seq_max": llama.native_engine.n_seq_max,
            "n_vocab": llama.n_vocab(),
            "n_embd": llama.n_embd(),
            "path": llama.model_path,
        },
    )


@openai_router.get("/models")
async def list_models(request: Request) -> ModelList:
    serving = serving_of(request)
    return ModelList(data=[_card(m) for m in serving.models.values()])


@openai_router.get("/models/{model_id}")
async def get_model(model_id: str, request: Request) -> ModelCard:
    return _card(serving_of(request).get(model_id))


@extra_router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 when every model is loaded, 503 while loading (or when loading failed)."""
    serving = serving_of(request)
    if serving.ready:
        return JSONResponse({"status": "ok", "models": list(serving.models)})
    if serving.load_error:
        return JSONResponse({"status": "error", "error": serving.load_error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)


@extra_router.get("/metrics")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(serving_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@extra_router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, list[int]]:
    model = serving_of(request).get(body.model)
    return {"tokens": model.llama.tokenize(body.content, add_bos=body.add_special, special=True)}


@extra_router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, str]:
    model = serving_of(request).get(body.model)
    text = model.llama.detokenize(body.tokens, special=True)
    return {"content": text.decode("utf-8", errors="replace")}
