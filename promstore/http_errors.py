"""The one place where errors become HTTP status codes.

Remote-write senders act on the class of the code: 4xx means "drop this batch, it will
never be accepted", 5xx and 429 mean "retry later". So only what is wrong with the
request itself may be a 4xx; anything that is our problem must be a 5xx.
"""

from __future__ import annotations

from storage.errors import (
    BadRequestError,
    TooLargeError,
    UnavailableError,
    UnsupportedMediaTypeError,
)

__all__ = ["status_for"]


def status_for(exc: BaseException) -> int:
    """HTTP status for an exception raised while handling a request."""
    if isinstance(exc, TooLargeError):
        return 413
    if isinstance(exc, UnsupportedMediaTypeError):
        return 415
    if isinstance(exc, BadRequestError):
        return 400
    if isinstance(exc, UnavailableError):
        return 503
    return 500  # PromstoreError (storage failures) and anything unexpected
