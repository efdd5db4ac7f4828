"""PromQL for promstore: parse with ``promql-parser``, evaluate vectorised with numpy.

``Engine`` runs instant and range queries against any ``storage.interface.Selectable``;
``parse`` turns text into the engine's AST; the errors say which API error type a
failure is. ``docs/promql.md`` lists what is supported and where we differ.
"""

from .engine import Engine, EngineOptions, QueryResult
from .errors import (
    EvaluationError,
    ParseError,
    QueryCanceledError,
    QueryTimeoutError,
    TooManySamplesError,
)
from .parser import parse

__all__ = [
    "Engine",
    "EngineOptions",
    "EvaluationError",
    "ParseError",
    "QueryCanceledError",
    "QueryResult",
    "QueryTimeoutError",
    "TooManySamplesError",
    "parse",
]
