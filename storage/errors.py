"""The one exception hierarchy of promstore.

Storage raises the classes here; the HTTP layer maps them to status codes in one
place (``promstore.http_errors``). Messages are short, lowercase and name the
offending thing (series, label, limit) so that they can be returned to clients.
"""

from __future__ import annotations

__all__ = [
    "BadDataError",
    "BadRequestError",
    "CorruptionError",
    "LimitExceededError",
    "PromstoreError",
    "StorageError",
    "TooLargeError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
]


class PromstoreError(Exception):
    """Base class of every error promstore raises on purpose."""


class BadRequestError(PromstoreError):
    """The client sent something we will never accept (maps to 400)."""


class BadDataError(BadRequestError):
    """Malformed payload: bad protobuf, bad snappy, invalid labels (400)."""


class LimitExceededError(BadRequestError):
    """A configured limit was exceeded: labels per series, name length… (400)."""


class TooLargeError(BadRequestError):
    """Request body larger than allowed, compressed or decompressed (413)."""


class UnsupportedMediaTypeError(BadRequestError):
    """Content type or encoding we do not speak (415), so that senders fall back."""


class UnavailableError(PromstoreError):
    """We cannot take the data now but could later (503/429): the sender should retry."""


class StorageError(PromstoreError):
    """An I/O or internal failure in the storage engine (500): the sender should retry."""


class CorruptionError(StorageError):
    """On-disk data failed a checksum or structural check."""
