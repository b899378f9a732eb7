"""The FastAPI application: settings in, routers, auth, limits, CORS, metrics, errors."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .errors import APIError, install_error_handlers
from .metrics import Metrics
from .routes import extra_router, openai_router
from .serving import Serving
from .settings import ServerSettings

__all__ = ["create_app"]

logger = logging.getLogger("llamacpp_integrations.server")

PUBLIC_PATHS = frozenset({"/health", "/docs", "/openapi.json", "/docs/oauth2-redirect"})


class Guard:
    """ASGI middleware: the API key (constant-time), the body size limit (413), and the
    request count by endpoint and status."""

    def __init__(self, app: ASGIApp, *, keys: list[str], max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.max_body = max_body
        self.metrics = metrics

    def _authorized(self, scope: Scope) -> bool:
        if not self.keys or scope["path"] in PUBLIC_PATHS or scope.get("method") == "OPTIONS":
            return True
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        given = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"api-key", b"")
        ok = False
        for key in self.keys:  # compare with every key, in constant time each
            ok |= hmac.compare_digest(given, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"]
        status = {"code": 500}

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if not self._authorized(scope):
                raise APIError(
                    401,
                    "a valid API key is required (Authorization: Bearer <key>)",
                    "authentication_error",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                raise self._too_large()
            received = 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise self._too_large()
                return message

            await self.app(scope, receive_limited, send_counted)
        except APIError as e:
            status["code"] = e.status
            await e.response()(scope, receive, send)
        finally:
            self.metrics.request(endpoint, status["code"])

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"the request body is larger than --max-body-bytes={self.max_body}",
            code="request_too_large",
        )


def create_app(settings: ServerSettings, *, load_in_background: bool = True) -> FastAPI:
    """The app; the models load at startup (in a thread, /health answers 503 meanwhile)."""
    metrics = Metrics()
    serving = Serving(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(serving.load))
        if not load_in_background:
            await loader
        try:
            yield
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(loader), 600)
            serving.close()

    app = FastAPI(
        title="llamacpp-integrations",
        version=__version__,
        description="An OpenAI-compatible server on llama.cpp's engine, in-process.",
        lifespan=lifespan,
    )
    app.state.serving = serving
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(extra_router)
    if settings.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "api-key"],
        )
    app.add_middleware(
        Guard, keys=settings.keys(), max_body=settings.max_body_bytes, metrics=metrics
    )
    return app
