"""The JSON envelope of the Prometheus HTTP API.

Every answer is ``{"status":"success","data":…}`` (with ``"warnings":[…]`` only when
there are some) or ``{"status":"error","errorType":…,"error":…}`` with the HTTP status
Prometheus gives that error type. Clients such as Grafana read ``errorType`` and
``error``, so the keys, their order and the status codes follow Prometheus.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from aiohttp import web

from storage.errors import BadRequestError, PromstoreError, UnavailableError

__all__ = [
    "ApiError",
    "ErrorType",
    "api_error_from",
    "error_body",
    "error_response",
    "json_response",
    "success_body",
    "success_response",
]

log = logging.getLogger(__name__)


class ErrorType(StrEnum):
    """The ``errorType`` values of the Prometheus API."""

    BAD_DATA = "bad_data"
    EXECUTION = "execution"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    INTERNAL = "internal"
    NOT_FOUND = "not_found"
    NOT_ACCEPTABLE = "not_acceptable"
    UNAVAILABLE = "unavailable"


_STATUS = {
    ErrorType.BAD_DATA: 400,
    ErrorType.EXECUTION: 422,
    ErrorType.TIMEOUT: 503,
    ErrorType.CANCELED: 499,  # nginx's "client closed request", as Prometheus uses it
    ErrorType.INTERNAL: 500,
    ErrorType.NOT_FOUND: 404,
    ErrorType.NOT_ACCEPTABLE: 406,
    ErrorType.UNAVAILABLE: 503,
}


class ApiError(Exception):
    """An error answered in the envelope: ``raise ApiError(ErrorType.BAD_DATA, "…")``."""

    def __init__(self, error_type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    @property
    def status(self) -> int:
        return _STATUS[self.error_type]


def api_error_from(exc: BaseException) -> ApiError:
    """The envelope error for any exception a handler let through.

    Client mistakes are ``bad_data``; a store that cannot answer now is ``unavailable``;
    other storage failures are ``execution``, as Prometheus reports querier errors;
    anything unexpected is ``internal`` and logged with its traceback.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BadRequestError):
        return ApiError(ErrorType.BAD_DATA, str(exc))
    if isinstance(exc, UnavailableError):
        return ApiError(ErrorType.UNAVAILABLE, str(exc))
    if isinstance(exc, PromstoreError):
        return ApiError(ErrorType.EXECUTION, str(exc))
    log.error("unexpected error answering an API request", exc_info=exc)
    return ApiError(ErrorType.INTERNAL, f"internal error: {type(exc).__name__}")


def _dump(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a badly encoded request
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def success_body(data: Any, warnings: Sequence[str] = ()) -> bytes:
    """The encoded success envelope; call it from a worker thread for large ``data``."""
    obj: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        obj["warnings"] = list(warnings)
    return _dump(obj)


def error_body(error: ApiError, data: Any = None, warnings: Sequence[str] = ()) -> bytes:
    """The encoded error envelope; ``data`` only when there is some, as Prometheus."""
    obj: dict[str, Any] = {"status": "error"}
    if data is not None:
        obj["data"] = data
    obj["errorType"] = str(error.error_type)
    obj["error"] = error.message
    if warnings:
        obj["warnings"] = list(warnings)
    return _dump(obj)


def json_response(body: bytes, status: int = 200) -> web.Response:
    """A response carrying an already encoded envelope."""
    return web.Response(body=body, status=status, content_type="application/json")


def success_response(data: Any, warnings: Sequence[str] = ()) -> web.Response:
    return json_response(success_body(data, warnings))


def error_response(error: ApiError, data: Any = None) -> web.Response:
    return json_response(error_body(error, data), error.status)
