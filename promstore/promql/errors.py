"""The errors a query can end with, placed in promstore's one exception hierarchy.

The HTTP layer maps them to the Prometheus API's ``errorType``: a query that cannot be
parsed or type-checked is ``bad_data`` (``ParseError`` is a ``BadDataError``); one that
fails while it runs is ``execution``; running out of time is ``timeout``; a client that
went away is ``canceled``. Messages follow Prometheus's wording, since clients and
people compare them.
"""

from __future__ import annotations

from storage.errors import BadDataError, PromstoreError

__all__ = [
    "EvaluationError",
    "ParseError",
    "QueryCanceledError",
    "QueryTimeoutError",
    "TooManySamplesError",
]


class ParseError(BadDataError):
    """The query text is not valid PromQL (syntax or types)."""


class EvaluationError(PromstoreError):
    """The query is valid but cannot be answered on this data, e.g. a many-to-many match."""


class TooManySamplesError(EvaluationError):
    """The query would hold more samples in memory than the configured maximum."""

    def __init__(self) -> None:
        super().__init__("query processing would load too many samples into memory in "
                         "query execution")


class QueryTimeoutError(PromstoreError):
    """The query ran longer than its timeout."""

    def __init__(self, where: str = "expression evaluation") -> None:
        super().__init__(f"query timed out in {where}")


class QueryCanceledError(PromstoreError):
    """The query was canceled, usually because its client went away."""

    def __init__(self, where: str = "expression evaluation") -> None:
        super().__init__(f"query was canceled in {where}")
