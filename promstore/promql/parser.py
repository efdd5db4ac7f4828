"""PromQL text to our own small AST, through the ``promql-parser`` library.

The library (Python bindings of a Rust parser) does the lexing, parsing and type
checking. It recurses on nesting and takes the whole process down on very deep input,
so ``parse`` first measures the text cheaply and refuses what could be too deep.

The library follows newer Prometheus versions than the 2.42 semantics we implement, so
the conversion also refuses what 2.42 does not know (functions added later, ``or``
inside a selector, ``fill()``) with the error 2.42 gives, and teaches the library
``holt_winters``, which 2.42 has and newer versions renamed.

Nodes are frozen dataclasses; times and durations are integer milliseconds. Parentheses
are dropped, since they carry no meaning once the tree is built.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import promql_parser as lib

from storage.errors import BadDataError
from storage.matchers import Matcher, MatchType

from .errors import ParseError

__all__ = [
    "MAX_DEPTH",
    "MAX_QUERY_LENGTH",
    "Aggregate",
    "At",
    "Binary",
    "Call",
    "Cardinality",
    "MatrixSelector",
    "Node",
    "NumberLiteral",
    "StringLiteral",
    "Subquery",
    "Unary",
    "ValueType",
    "VectorSelector",
    "parse",
    "step_invariant",
]

MAX_QUERY_LENGTH = 256 * 1024
# Nesting depth plus operator count. The Rust parser overflows its stack somewhere past
# 3,000 nested nodes; the evaluator recurses a few Python frames per level.
MAX_DEPTH = 250


class ValueType(StrEnum):
    """The type of an expression, named as Prometheus names them in messages."""

    SCALAR = "scalar"
    VECTOR = "vector"
    MATRIX = "matrix"
    STRING = "string"


class Cardinality(StrEnum):
    ONE_TO_ONE = "one-to-one"
    MANY_TO_ONE = "many-to-one"
    ONE_TO_MANY = "one-to-many"
    MANY_TO_MANY = "many-to-many"


At = int | Literal["start", "end"] | None
"""An ``@`` modifier: a timestamp in ms, ``start()``/``end()`` of the query, or none."""


@dataclass(frozen=True)
class NumberLiteral:
    value: float
    type = ValueType.SCALAR


@dataclass(frozen=True)
class StringLiteral:
    value: str
    type = ValueType.STRING


@dataclass(frozen=True)
class VectorSelector:
    matchers: tuple[Matcher, ...]
    offset: int = 0
    at: At = None
    type = ValueType.VECTOR


@dataclass(frozen=True)
class MatrixSelector:
    selector: VectorSelector
    range: int
    type = ValueType.MATRIX


@dataclass(frozen=True)
class Subquery:
    expr: Node
    range: int
    step: int | None  # None: the default evaluation interval
    offset: int = 0
    at: At = None
    type = ValueType.MATRIX


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]
    type: ValueType


@dataclass(frozen=True)
class Aggregate:
    op: str
    expr: Node
    param: Node | None
    grouping: tuple[str, ...]  # sorted
    without: bool
    type = ValueType.VECTOR


@dataclass(frozen=True)
class Binary:
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool = False
    card: Cardinality = Cardinality.ONE_TO_ONE
    on: bool = False  # on(...) when True, ignoring(...) otherwise
    matching: tuple[str, ...] = ()
    include: tuple[str, ...] = ()  # group_left/group_right labels

    @property
    def type(self) -> ValueType:
        if self.lhs.type == ValueType.SCALAR and self.rhs.type == ValueType.SCALAR:
            return ValueType.SCALAR
        return ValueType.VECTOR


@dataclass(frozen=True)
class Unary:
    """Negation (a leading ``+`` leaves no node)."""

    expr: Node

    @property
    def type(self) -> ValueType:
        return self.expr.type


Node = (NumberLiteral | StringLiteral | VectorSelector | MatrixSelector | Subquery | Call
        | Aggregate | Binary | Unary)

# Functions of Prometheus 2.42; the library knows some later ones, which 2.42 refuses.
FUNCTIONS_2_42 = frozenset((
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "days_in_month", "day_of_month", "day_of_week", "day_of_year", "deg",
    "delta", "deriv", "exp", "floor", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_sum", "holt_winters", "hour", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar",
    "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
    "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
))
AGGREGATIONS_2_42 = frozenset((
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values",
))


# Functions whose value depends on the evaluation time even when their arguments do not.
AT_MODIFIER_UNSAFE = frozenset((
    "days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour", "minute", "month",
    "year", "predict_linear", "time", "timestamp",
))


def step_invariant(node: Node) -> bool:
    """Whether ``node`` has the same value at every step, by Prometheus's rules: what is
    pinned with ``@`` and what is made of literals only. (Prometheus evaluates such
    parts once; where that changes results, the engine reproduces it.)"""
    if isinstance(node, NumberLiteral | StringLiteral):
        return True
    if isinstance(node, VectorSelector | Subquery):
        return node.at is not None
    if isinstance(node, MatrixSelector):
        return node.selector.at is not None
    if isinstance(node, Aggregate | Unary):
        return step_invariant(node.expr)
    if isinstance(node, Binary):
        return step_invariant(node.lhs) and step_invariant(node.rhs)
    return node.name not in AT_MODIFIER_UNSAFE and all(step_invariant(a) for a in node.args)


def _register_holt_winters() -> None:
    fn = lib.Function("holt_winters", [lib.ValueType.Matrix, lib.ValueType.Scalar,
                                       lib.ValueType.Scalar], lib.ValueType.Vector)
    with contextlib.suppress(ValueError):  # already known to the library
        lib.register_extra_functions([fn])


_register_holt_winters()

# -- the guard ---------------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', re.DOTALL)
_OPERATORS = re.compile(r"==|!=|>=|<=|[-+*/%^<>]|\b(?:and|or|unless|atan2)\b")
_BRACKETS = str.maketrans({c: "(" for c in "([{"} | {c: ")" for c in ")]}"})


def _check_size(text: str) -> None:
    if len(text) > MAX_QUERY_LENGTH:
        raise ParseError(f"parse error: query is longer than {MAX_QUERY_LENGTH} bytes")
    bare = _STRINGS.sub('""', text)
    depth = deepest = 0
    for ch in bare.translate(_BRACKETS):
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    if deepest + len(_OPERATORS.findall(bare)) > MAX_DEPTH:
        raise ParseError(f"parse error: query nests too deeply (more than {MAX_DEPTH} "
                         "levels of brackets and operators)")


_QUOTED = re.compile(r"'([^']*)'")
_TYPE_WORDS = re.compile(r"\b(expected type |got )(matrix|vector)\b")
_DOCUMENTED_TYPES = {"matrix": "range vector", "vector": "instant vector"}


def _prometheus_wording(message: str) -> str:
    """The library's message in Prometheus's words where they differ only in wording:
    names in double quotes, "range vector" and "instant vector" for the types."""
    message = _QUOTED.sub(r'"\1"', message)
    message = _TYPE_WORDS.sub(lambda m: m[1] + _DOCUMENTED_TYPES[m[2]], message)
    if "in aggregation expression" in message and \
            message.startswith(("expected type scalar", "expected type string")):
        message = message.replace("aggregation expression", "aggregation parameter")
    return message


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Node:
    """The AST of ``text``; raises ``ParseError`` with Prometheus-like messages.

    Dashboards send the same few queries again and again, and parsing one costs about as
    much as answering a one-series query, so recent ASTs are kept (nodes are immutable).
    """
    _check_size(text)
    try:
        expr = lib.parse(text)
    except ValueError as exc:
        raise ParseError(f"parse error: {_prometheus_wording(str(exc))}") from None
    return _convert(expr)


# -- conversion --------------------------------------------------------------------------

_MATCH_TYPES = {
    str(lib.MatchOp.Equal): MatchType.EQ,
    str(lib.MatchOp.NotEqual): MatchType.NEQ,
    str(lib.MatchOp.Re): MatchType.RE,
    str(lib.MatchOp.NotRe): MatchType.NRE,
}
_VALUE_TYPES = {
    str(lib.ValueType.Scalar): ValueType.SCALAR,
    str(lib.ValueType.Vector): ValueType.VECTOR,
    str(lib.ValueType.Matrix): ValueType.MATRIX,
    str(lib.ValueType.String): ValueType.STRING,
}
_CARDINALITIES = {
    str(lib.VectorMatchCardinality.OneToOne): Cardinality.ONE_TO_ONE,
    str(lib.VectorMatchCardinality.ManyToOne): Cardinality.MANY_TO_ONE,
    str(lib.VectorMatchCardinality.OneToMany): Cardinality.ONE_TO_MANY,
    str(lib.VectorMatchCardinality.ManyToMany): Cardinality.MANY_TO_MANY,
}
_SET_OPERATORS = frozenset(("and", "or", "unless"))
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
# How the library prints the ``@`` timestamp of a node in its debug form.
_AT_DEBUG = re.compile(r"^        at: Some\(\n\s+At\(\n\s+SystemTime \{\n\s+tv_sec: (-?\d+),"
                       r"\n\s+tv_nsec: (\d+),", re.MULTILINE)


def _ms(delta: dt.timedelta | None) -> int:
    return 0 if delta is None else delta // _MS


def _at(node: lib.VectorSelector | lib.SubqueryExpr) -> At:
    modifier = node.at
    if modifier is None:
        return None
    kind = str(modifier.type)
    if kind == str(lib.AtModifierType.Start):
        return "start"
    if kind == str(lib.AtModifierType.End):
        return "end"
    # The debug form is read first: the library panics (and prints a backtrace) when
    # asked for a datetime it cannot build, such as one before 1970.
    m = _AT_DEBUG.search(repr(node))
    if m is None:
        try:
            when = modifier.at
        except BaseException:  # a Rust panic is a BaseException
            when = None
        if when is None:
            raise ParseError("parse error: cannot read the timestamp of an @ modifier")
        return (when - _EPOCH) // _MS
    return int(m[1]) * 1000 + int(m[2]) // 1_000_000


def _matchers(sel: lib.VectorSelector) -> tuple[Matcher, ...]:
    if sel.matchers.or_matchers:
        raise ParseError("parse error: unexpected \"or\" in label matching")
    out = [Matcher(MatchType.EQ, "__name__", sel.name)] if sel.name else []
    try:
        out += [Matcher(_MATCH_TYPES[str(m.op)], m.name, m.value) for m in sel.matchers.matchers]
    except BadDataError as exc:
        raise ParseError(f"parse error: {exc}") from None
    return tuple(out)


def _vector_selector(sel: lib.VectorSelector) -> VectorSelector:
    return VectorSelector(_matchers(sel), _ms(sel.offset), _at(sel))


def _convert(e: lib.Expr) -> Node:
    """Our node for library node ``e`` (recursive; depth is bounded by the guard)."""
    if isinstance(e, lib.ParenExpr):
        return _convert(e.expr)
    if isinstance(e, lib.NumberLiteral):
        return NumberLiteral(float(e.val))
    if isinstance(e, lib.StringLiteral):
        return StringLiteral(e.val)
    if isinstance(e, lib.VectorSelector):
        return _vector_selector(e)
    if isinstance(e, lib.MatrixSelector):
        return MatrixSelector(_vector_selector(e.vector_selector), _ms(e.range))
    if isinstance(e, lib.SubqueryExpr):
        step = _ms(e.step) if e.step is not None else None
        return Subquery(_convert(e.expr), _ms(e.range), step or None, _ms(e.offset), _at(e))
    if isinstance(e, lib.UnaryExpr):
        return Unary(_convert(e.expr))
    if isinstance(e, lib.Call):
        name = e.func.name
        if name not in FUNCTIONS_2_42:
            raise ParseError(f'parse error: unknown function with name "{name}"')
        return Call(name, tuple(_convert(a) for a in e.args),
                    _VALUE_TYPES[str(e.func.return_type)])
    if isinstance(e, lib.AggregateExpr):
        return _aggregate(e)
    if isinstance(e, lib.BinaryExpr):
        return _binary(e)
    raise ParseError(f"parse error: unsupported expression {type(e).__name__}")


def _aggregate(e: lib.AggregateExpr) -> Aggregate:
    op = str(e.op)
    if op not in AGGREGATIONS_2_42:
        raise ParseError(f'parse error: unknown aggregation "{op}"')
    grouping: tuple[str, ...] = ()
    without = False
    if e.modifier is not None:
        grouping = tuple(sorted(set(e.modifier.labels)))
        without = str(e.modifier.type) == str(lib.AggModifierType.Without)
    param = _convert(e.param) if e.param is not None else None
    return Aggregate(op, _convert(e.expr), param, grouping, without)


def _binary(e: lib.BinaryExpr) -> Binary:
    op = str(e.op)
    lhs, rhs = _convert(e.lhs), _convert(e.rhs)
    m = e.modifier
    if m is None:
        card = Cardinality.MANY_TO_MANY if op in _SET_OPERATORS else Cardinality.ONE_TO_ONE
        return Binary(op, lhs, rhs, card=card)
    fill = m.fill_values
    if fill is not None and (fill.lhs is not None or fill.rhs is not None):
        raise ParseError("parse error: unexpected \"fill\" modifier")
    card = _CARDINALITIES[str(m.card)]
    if op in _SET_OPERATORS:
        card = Cardinality.MANY_TO_MANY
    on, matching = False, tuple[str, ...]()
    if m.matching is not None:
        on = str(m.matching.type) == str(lib.LabelModifierType.Include)
        matching = tuple(sorted(set(m.matching.labels)))
    include = tuple(dict.fromkeys(m.group_labels or ()))
    return Binary(op, lhs, rhs, bool(m.return_bool), card, on, matching, include)
