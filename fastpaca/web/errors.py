"""THE mapping of errors to HTTP: one table, one middleware.

Owns how every failure looks on the wire: ``{"error": code, "message": text}``
with the status of DESIGN section 1, ``Retry-After`` on 503 and 429. Handlers
raise domain errors and never build error responses; aiohttp's own HTTP
errors (unknown route, wrong method, body too large) get the same shape. An
unexpected exception is a bug: 500 ``internal``, logged with its traceback,
which never reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from fastpaca.errors import (
    ConversationNotFound,
    ConversationTombstoned,
    FastpacaError,
    IdempotencyConflict,
    Overloaded,
    RaftError,
    SequenceConflict,
    Unavailable,
    ValidationError,
)

__all__ = ["error_middleware", "error_response", "response_for_exception"]

_log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Domain error class -> (HTTP status, error code). Looked up along the MRO, so
# a subclass maps like its nearest listed base. ValidationError carries its own code.
ERROR_TABLE: dict[type[FastpacaError], tuple[int, str]] = {
    ValidationError: (400, "invalid_message"),
    ConversationNotFound: (404, "conversation_not_found"),
    SequenceConflict: (409, "conflict"),
    IdempotencyConflict: (409, "idempotency_conflict"),
    ConversationTombstoned: (410, "conversation_tombstoned"),
    Overloaded: (429, "rate_limited"),
    Unavailable: (503, "unavailable"),
    RaftError: (503, "unavailable"),
}

# aiohttp's own errors (routing, body size) -> error code.
_HTTP_CODES: dict[int, str] = {
    400: "invalid_json",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def error_response(
    status: int, code: str, message: str, *, retry_after_s: int | None = None
) -> web.Response:
    headers = {} if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return web.Response(
        status=status,
        body=orjson.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )


def _domain_response(exc: FastpacaError) -> web.Response:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            status, code = ERROR_TABLE[cls]
            break
    else:
        return _internal(exc)
    if isinstance(exc, ValidationError):
        code = exc.code
    retry_after = None
    if status == 503:
        retry_after = exc.retry_after_s if isinstance(exc, Unavailable) else 1
    elif status == 429:
        retry_after = 1
    return error_response(status, code, str(exc), retry_after_s=retry_after)


def _http_response(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "internal" if exc.status >= 500 else "bad_request")
    if exc.status == 413:
        message = f"Body is larger than the limit (FASTPACA_MAX_BODY_BYTES): {exc.text}"
    else:
        message = exc.reason
    response = error_response(exc.status, code, message)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def _internal(exc: BaseException, request: web.Request | None = None) -> web.Response:
    path = None if request is None else request.path
    _log.error("unhandled error", exc_info=exc, extra={"type": "http.internal_error", "path": path})
    return error_response(500, "internal", "Internal server error")


def response_for_exception(exc: Exception, request: web.Request) -> web.Response:
    """The reply for what a handler raised; an ``HTTPException`` below 400
    (a redirect) is raised again for aiohttp to send as it is."""
    if isinstance(exc, FastpacaError):
        return _domain_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _http_response(exc)
    return _internal(exc, request)  # a bug: report it as 500 without leaking details


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The mapping as a middleware of its own (``server.py`` inlines it into
    its one front middleware, to save a layer per request)."""
    try:
        return await handler(request)
    except Exception as exc:
        return response_for_exception(exc, request)
