"""Errors in OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``, with the status
each cause deserves: what the client sent is a 4xx, never a crash or a 500."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    ContextWindowExceededError,
    EngineClosedError,
    GrammarError,
    InvalidParameterError,
    KVCacheFullError,
    LlamaError,
)

__all__ = ["APIError", "install_error_handlers"]


class APIError(Exception):
    """An HTTP error with OpenAI's body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_llama_error(e: LlamaError) -> APIError:
    """The HTTP form of an engine error."""
    message = str(e)
    if isinstance(e, ContextWindowExceededError):
        return APIError(400, message, code="context_length_exceeded", param="messages")
    if isinstance(e, GrammarError):
        return APIError(400, message, code="invalid_grammar", param="grammar")
    if isinstance(e, InvalidParameterError):
        return APIError(400, message, code="invalid_value")
    if isinstance(e, KVCacheFullError):
        return APIError(
            503, message, "server_busy", code="kv_cache_full", headers={"Retry-After": "1"}
        )
    if isinstance(e, EngineClosedError):
        return APIError(503, message, "server_error", code="shutting_down")
    return APIError(500, message, "server_error")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return f"the body is not valid JSON: {first.get('msg', '')}", None
    if kind == "extra_forbidden":
        return f"unknown field '{param}'", param
    if kind == "missing":
        return f"missing required field '{param}'", param
    if param is None:
        return f"invalid request body: {first.get('msg', '')}", None
    return f"invalid value for '{param}': {first.get('msg', '')}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(LlamaError)
    async def _llama_error(_: Request, exc: LlamaError) -> JSONResponse:
        return from_llama_error(exc).response()

    @app.exception_handler(TypeError)
    async def _type_error(_: Request, exc: TypeError) -> JSONResponse:
        # a keyword the engine does not take reached it: the client's fault, named
        return APIError(400, str(exc)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return APIError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        return APIError(exc.status_code, detail, kind, headers=headers).response()
