"""RE2 regular expressions for label matchers, as Prometheus 2.x reads them.

Private to ``storage.matchers``. Python's ``re`` reads RE2 syntax differently in many
corners (``\\d`` is Unicode, ``$`` matches before a final newline, ``{,3}`` is a repeat,
``\\1`` is a backreference, lookarounds exist), so patterns are parsed here by RE2's rules
into a small syntax tree, from which come: a Python pattern with explicit semantics (no
flags, every class spelled out), a finite literal set where there is one, the pattern's
shape ("everything", "anything non-empty"), and for patterns on which backtracking could
take exponential time, a linear-time NFA simulation. What RE2 rejects raises
``BadDataError``.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .errors import BadDataError

__all__ = ["Compiled", "Shape", "compile_pattern", "literal_pattern"]

# -- limits -------------------------------------------------------------------------------

_MAX_PATTERN_CHARS = 4 << 20  # generous: Grafana sends multi-value variables as a|b|c|…
_MAX_REPEAT = 1000  # RE2's limit on {n,m}, also on the product of nested counts
_MAX_NESTING = 100  # groups inside groups (RE2 allows more); bounds our recursion
_MAX_LITERALS = 1 << 16  # largest literal set worth building for index look-ups
_MAX_CLASS_EXPANSION = 16  # a class of at most this many characters joins a literal set
_MAX_PROGRAM = 200_000  # instructions of the linear-time engine (repeats are unrolled)
_MAX_LOOPS = 3  # more variable-length repeats than this may backtrack for too long

_MAX_RUNE = 0x10FFFF

Ranges = tuple[tuple[int, int], ...]
"""Sorted, disjoint, non-adjacent inclusive code point ranges."""

_ALL: Ranges = ((0, _MAX_RUNE),)
_NOT_NL: Ranges = ((0, 9), (11, _MAX_RUNE))


# -- character sets -----------------------------------------------------------------------


def _normalize(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def _complement(ranges: Ranges) -> Ranges:
    out = []
    nxt = 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_RUNE:
        out.append((nxt, _MAX_RUNE))
    return tuple(out)


@functools.cache
def _fold_orbits() -> tuple[list[int], dict[int, tuple[int, ...]]]:
    """Case-fold equivalence classes (``k``, ``K``, Kelvin sign …) of the characters
    that have one, as RE2's ``(?i)`` uses them; plus those characters, sorted."""
    edges: dict[int, set[int]] = {}
    for cp in range(0x1E944):  # no character above folds (RE2's maxFold)
        c = chr(cp)
        for other in (c.lower(), c.upper(), c.casefold()):
            if len(other) == 1 and other != c:
                edges.setdefault(cp, set()).add(ord(other))
                edges.setdefault(ord(other), set()).add(cp)
    orbits: dict[int, tuple[int, ...]] = {}
    for start in edges:
        if start in orbits:
            continue
        seen, todo = {start}, [start]
        while todo:
            for nb in edges[todo.pop()]:
                if nb not in seen:
                    seen.add(nb)
                    todo.append(nb)
        orbit = tuple(sorted(seen))
        for cp in orbit:
            orbits[cp] = orbit
    return sorted(orbits), orbits


def _fold(ranges: Ranges) -> Ranges:
    """``ranges`` plus every case variant of their characters."""
    keys, orbits = _fold_orbits()
    extra: list[tuple[int, int]] = []
    for lo, hi in ranges:
        start, stop = bisect.bisect_left(keys, lo), bisect.bisect_right(keys, hi)
        extra.extend((o, o) for cp in keys[start:stop] for o in orbits[cp])
    return _normalize(itertools.chain(ranges, extra)) if extra else ranges


def _r(*spans: str) -> Ranges:
    """Ranges from spans written as ``"az"`` (a to z) or ``"_"`` (one character)."""
    return _normalize((ord(s[0]), ord(s[-1])) for s in spans)


_PERL_CLASSES = {"d": _r("09"), "s": _r("\t\n", "\f\r", " "), "w": _r("09", "AZ", "az", "_")}

_POSIX_CLASSES = {
    "alnum": _r("09", "AZ", "az"),
    "alpha": _r("AZ", "az"),
    "ascii": _r("\x00\x7f"),
    "blank": _r("\t", " "),
    "cntrl": _r("\x00\x1f", "\x7f"),
    "digit": _r("09"),
    "graph": _r("!~"),
    "lower": _r("az"),
    "print": _r(" ~"),
    "punct": _r("!/", ":@", "[`", "{~"),
    "space": _r("\t\r", " "),
    "upper": _r("AZ"),
    "word": _r("09", "AZ", "az", "_"),
    "xdigit": _r("09", "AF", "af"),
}

# Unicode general categories as Go's unicode.Categories names them; scripts (\p{Greek})
# have no table in Python's standard library and are rejected.
_CATEGORY_NAMES = frozenset((
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn",
    "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps",
    "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
))  # fmt: skip


@functools.cache
def _unicode_category(name: str) -> Ranges:
    """Code point ranges of a general category (one letter: the union of its kind)."""
    cats = _category_codes()
    wanted = [i for i, c in enumerate(_ALL_CATEGORIES) if c == name or c[0] == name]
    mask = np.isin(cats, wanted)
    edges = np.flatnonzero(np.diff(mask.astype(np.int8), prepend=0, append=0))
    return tuple((int(lo), int(hi) - 1) for lo, hi in zip(edges[::2], edges[1::2]))


_ALL_CATEGORIES = sorted(_CATEGORY_NAMES - {"C", "L", "M", "N", "P", "S", "Z"}) + ["Cn"]


@functools.cache
def _category_codes() -> np.ndarray:
    index = {c: i for i, c in enumerate(_ALL_CATEGORIES)}
    cat = unicodedata.category
    return np.fromiter(
        (index[cat(chr(cp))] for cp in range(_MAX_RUNE + 1)), dtype=np.uint8, count=_MAX_RUNE + 1
    )


# -- syntax tree --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chars:
    """One character out of a set; a literal character is a set of one."""

    ranges: Ranges


@dataclass(frozen=True, slots=True)
class _Text:
    """A run of literal characters (case-sensitive), kept whole because long
    alternations of values are common and per-character nodes would be slow."""

    text: str


@dataclass(frozen=True, slots=True)
class _Assert:
    """A zero-width assertion: ``A`` text start, ``z`` text end, ``^``/``$`` line
    start/end, ``b``/``B`` ASCII word boundary or not."""

    kind: str


@dataclass(frozen=True, slots=True)
class _Concat:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Alt:
    branches: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Repeat:
    sub: _Node
    min: int
    max: int  # -1: unbounded
    counted: bool  # written as {n,m}; only those count towards RE2's size limit


_Node = _Chars | _Text | _Assert | _Concat | _Alt | _Repeat
_EMPTY = _Concat(())


# -- RE2 parser ---------------------------------------------------------------------------


class _Re2Error(Exception):
    """A pattern RE2 rejects; the message reads like Go's ``regexp/syntax`` errors."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")


_COUNTED_REPEAT = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")
_PLAIN_RUN = re.compile(r"[^\\.+*?()|\[\]{}^$]+")
_OCTAL = re.compile(r"[0-7]{1,3}")
_HEX = re.compile(r"\{([0-9A-Fa-f]+)\}|[0-9A-Fa-f]{2}")
_UNSUPPORTED_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?>", "(?#", "(?(", "(?P=", "(?P>", "(?'")
_CAPTURE_NAME = re.compile(r"[A-Za-z0-9_]+")


class _Parser:
    """Recursive-descent parser for RE2's Perl-flavoured syntax, as Go's regexp uses it."""

    def __init__(self, src: str) -> None:
        self.s = src
        self.i = 0
        self.fold = False  # (?i)
        self.multiline = False  # (?m)
        self.dot_nl = False  # (?s)
        self.depth = 0

    def parse(self) -> _Node:
        node = self._alternation()
        if self.i < len(self.s):  # only a ')' stops the top level early
            raise _Re2Error("unexpected )", self.s)
        return node

    def _alternation(self) -> _Node:
        branches = [self._concat()]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            branches.append(self._concat())
        return branches[0] if len(branches) == 1 else _Alt(tuple(branches))

    def _concat(self) -> _Node:
        s = self.s
        items: list[_Node] = []
        last_repeat = -1  # where the previous repeat operator started, if it was the last token
        while self.i < len(s) and s[self.i] not in "|)":
            start = self.i
            bounds = self._repeat_op()
            if bounds is None:
                last_repeat = -1
                if not self._text(items):
                    self._atom(items)
                continue
            lo, hi, counted = bounds
            if self.i < len(s) and s[self.i] == "?":
                self.i += 1  # non-greedy: irrelevant when only whether it matches counts
            if last_repeat >= 0:  # a** or a*+ (possessive): RE2 refuses stacked repeats
                raise _Re2Error("invalid nested repetition operator", s[last_repeat : self.i])
            if not items:
                raise _Re2Error("missing argument to repetition operator", s[start : self.i])
            node = _Repeat(items[-1], lo, hi, counted)
            if counted and (lo >= 2 or hi >= 2) and not _repeat_size_ok(node, _MAX_REPEAT):
                raise _Re2Error("invalid repeat count", s[start : self.i])
            items[-1] = node
            last_repeat = start
        return items[0] if len(items) == 1 else _Concat(tuple(items))

    def _repeat_op(self) -> tuple[int, int, bool] | None:
        """Consume ``*``, ``+``, ``?`` or a well-formed ``{n,m}``; RE2 reads any other
        ``{`` as a literal (so ``{,3}`` is text, unlike in Python)."""
        s, i = self.s, self.i
        c = s[i]
        if c in "*+?":
            self.i += 1
            return {"*": (0, -1, False), "+": (1, -1, False), "?": (0, 1, False)}[c]
        if c != "{":
            return None
        m = _COUNTED_REPEAT.match(s, i)
        if m is None:
            return None
        lo = int(m[1]) if len(m[1]) <= 9 else -1
        hi = lo if m[2] is None else (-1 if m[3] is None else int(m[3]) if len(m[3]) <= 9 else -2)
        if lo < 0 or lo > _MAX_REPEAT or hi > _MAX_REPEAT or hi == -2 or 0 <= hi < lo:
            raise _Re2Error("invalid repeat count", m[0])
        self.i = m.end()
        return lo, hi, True

    def _text(self, items: list[_Node]) -> bool:
        """Take a run of plain characters as one node, except a last one that a repeat
        operator follows (``ab*`` repeats only ``b``)."""
        m = None if self.fold else _PLAIN_RUN.match(self.s, self.i)
        if m is None:
            return False
        end = m.end()
        if end < len(self.s) and self.s[end] in "*+?{":
            end -= 1
        if end == self.i:
            return False
        items.append(_Text(self.s[self.i : end]))
        self.i = end
        return True

    def _atom(self, items: list[_Node]) -> None:
        s = self.s
        c = s[self.i]
        if c == "(":
            node = self._group()
            if node is not None:
                items.append(node)
        elif c == "[":
            items.append(self._class())
        elif c == ".":
            self.i += 1
            items.append(_Chars(_ALL if self.dot_nl else _NOT_NL))
        elif c == "^":
            self.i += 1
            items.append(_Assert("^" if self.multiline else "A"))
        elif c == "$":
            self.i += 1
            items.append(_Assert("$" if self.multiline else "z"))
        elif c == "\\":
            self._escape_atom(items)
        else:
            self.i += 1
            items.append(self._literal(ord(c)))

    def _literal(self, cp: int) -> _Chars:
        ranges: Ranges = ((cp, cp),)
        return _Chars(_fold(ranges) if self.fold else ranges)

    def _group(self) -> _Node | None:
        """A group, or None for a flag change like ``(?i)`` that only sets state."""
        s, i = self.s, self.i
        if not s.startswith("(?", i):
            self.i += 1
            return self._group_body(self.fold, self.multiline, self.dot_nl)
        named = 4 if s.startswith("(?P<", i) else 3 if s.startswith("(?<", i) else 0
        if named and not s.startswith(("(?<=", "(?<!"), i):
            end = s.find(">", i)
            if end < 0 or not _CAPTURE_NAME.fullmatch(s, i + named, end):
                raise _Re2Error("invalid named capture", s[i : end + 1] if end >= 0 else s[i:])
            self.i = end + 1
            return self._group_body(self.fold, self.multiline, self.dot_nl)
        for prefix in _UNSUPPORTED_GROUPS:
            if s.startswith(prefix, i):
                raise _Re2Error("invalid or unsupported Perl syntax", prefix)
        flags = {"i": self.fold, "m": self.multiline, "s": self.dot_nl, "U": False}
        negate, saw_flag = False, False
        j = i + 2
        while j < len(s):
            c = s[j]
            j += 1
            if c in flags:
                flags[c] = not negate
                saw_flag = True
            elif c == "-" and not negate:
                negate, saw_flag = True, False
            elif c in ":)" and (saw_flag or not negate):
                self.i = j
                if c == ")":
                    self.fold, self.multiline, self.dot_nl = flags["i"], flags["m"], flags["s"]
                    return None
                return self._group_body(flags["i"], flags["m"], flags["s"])
            else:
                break
        raise _Re2Error("invalid or unsupported Perl syntax", s[i:j])

    def _group_body(self, fold: bool, multiline: bool, dot_nl: bool) -> _Node:
        """Parse up to the closing paren with the given flags, then restore the outer ones."""
        if self.depth >= _MAX_NESTING:
            raise _Re2Error("expression nests too deeply", self.s)
        outer = (self.fold, self.multiline, self.dot_nl)
        self.fold, self.multiline, self.dot_nl = fold, multiline, dot_nl
        self.depth += 1
        node = self._alternation()
        self.depth -= 1
        if self.i >= len(self.s):
            raise _Re2Error("missing closing )", self.s)
        self.i += 1
        self.fold, self.multiline, self.dot_nl = outer
        return node

    def _escape_atom(self, items: list[_Node]) -> None:
        s, i = self.s, self.i
        c = s[i + 1] if i + 1 < len(s) else ""
        if c in ("A", "z", "b", "B"):
            self.i += 2
            items.append(_Assert(c))
        elif c == "C":
            raise _Re2Error("invalid escape sequence", "\\C")
        elif c == "Q":  # \Q…\E: literal text; a following repeat applies to its last char
            end = s.find("\\E", i + 2)
            text = s[i + 2 :] if end < 0 else s[i + 2 : end]
            self.i = len(s) if end < 0 else end + 2
            items.extend(self._literal(ord(ch)) for ch in text)
        elif c in ("p", "P"):
            items.append(_Chars(self._unicode_class()))
        elif c.lower() in _PERL_CLASSES:
            self.i += 2
            items.append(_Chars(self._group_ranges(_PERL_CLASSES[c.lower()], c.isupper())))
        else:
            items.append(self._literal(self._escape()))

    def _escape(self) -> int:
        """A single-character escape at ``self.i`` (the backslash); returns its code point."""
        s, i = self.s, self.i
        if i + 1 >= len(s):
            raise _Re2Error("trailing backslash at end of expression", "")
        c = s[i + 1]
        if c < "\x80" and not c.isalnum():
            self.i = i + 2  # escaped punctuation is itself
            return ord(c)
        if c in "01234567":
            digits = _OCTAL.match(s, i + 1)
            assert digits is not None
            if c != "0" and digits.end() == i + 2:  # a lone \1 would be a backreference
                raise _Re2Error("invalid escape sequence", s[i : i + 2])
            self.i = digits.end()
            return int(digits[0], 8)
        if c == "x":
            m = _HEX.match(s, i + 2)
            if m is not None:
                cp = int(m[1] if m[1] is not None else m[0], 16)
                if cp <= _MAX_RUNE:
                    self.i = m.end()
                    return cp
            raise _Re2Error("invalid escape sequence", s[i : i + 2])
        control = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}.get(c)
        if control is None:
            raise _Re2Error("invalid escape sequence", s[i : i + 2])
        self.i = i + 2
        return control

    def _group_ranges(self, ranges: Ranges, negated: bool) -> Ranges:
        """A named class (Perl, POSIX, Unicode) under the current case folding."""
        if self.fold:
            ranges = _fold(ranges)
        return _complement(ranges) if negated else ranges

    def _unicode_class(self) -> Ranges:
        s, i = self.s, self.i
        negated = s[i + 1] == "P"
        if i + 2 >= len(s):
            raise _Re2Error("invalid character class range", s[i:])
        if s[i + 2] == "{":
            end = s.find("}", i)
            if end < 0:
                raise _Re2Error("invalid character class range", s[i:])
            seq, name = s[i : end + 1], s[i + 3 : end]
        else:
            seq, name = s[i : i + 3], s[i + 2]
        if name.startswith("^"):
            negated, name = not negated, name[1:]
        if name == "Any":
            ranges = _ALL
        elif name in _CATEGORY_NAMES:
            ranges = _unicode_category(name)
        elif name[:1].isalpha():
            raise _Re2Error("unsupported Unicode class (only general categories and Any)", seq)
        else:
            raise _Re2Error("invalid character class range", seq)
        self.i = i + len(seq)
        return self._group_ranges(ranges, negated)

    def _class(self) -> _Chars:
        s, start = self.s, self.i
        self.i += 1
        negated = self.i < len(s) and s[self.i] == "^"
        self.i += negated
        parts: list[tuple[int, int]] = []
        first = True  # ']' and '-' are literals in first position
        while True:
            if self.i >= len(s):
                raise _Re2Error("missing closing ]", s[start:])
            c = s[self.i]
            if c == "]" and not first:
                break
            first = False
            if s.startswith("[:", self.i):
                end = s.find(":]", self.i + 2)
                if end >= 0:
                    name = s[self.i + 2 : end]
                    neg = name.startswith("^")
                    ranges = _POSIX_CLASSES.get(name[neg:])
                    if ranges is None:
                        raise _Re2Error("invalid character class range", s[self.i : end + 2])
                    parts.extend(self._group_ranges(ranges, neg))
                    self.i = end + 2
                    continue
            if c == "\\" and self.i + 1 < len(s):
                nxt = s[self.i + 1]
                if nxt in ("p", "P"):
                    parts.extend(self._unicode_class())
                    continue
                if nxt.lower() in _PERL_CLASSES:
                    parts.extend(self._group_ranges(_PERL_CLASSES[nxt.lower()], nxt.isupper()))
                    self.i += 2
                    continue
            range_start = self.i
            lo = self._class_char(start)
            hi = lo
            if self.i + 1 < len(s) and s[self.i] == "-" and s[self.i + 1] != "]":
                self.i += 1
                hi = self._class_char(start)
                if hi < lo:
                    raise _Re2Error("invalid character class range", s[range_start : self.i])
            parts.extend(_fold(((lo, hi),)) if self.fold else ((lo, hi),))
        self.i += 1
        ranges = _normalize(parts)
        return _Chars(_complement(ranges) if negated else ranges)

    def _class_char(self, class_start: int) -> int:
        if self.i >= len(self.s):
            raise _Re2Error("missing closing ]", self.s[class_start:])
        if self.s[self.i] == "\\":
            return self._escape()
        self.i += 1
        return ord(self.s[self.i - 1])


def _repeat_size_ok(node: _Node, budget: int) -> bool:
    """RE2's rule: nested counted repeats may not multiply beyond ``_MAX_REPEAT``."""
    if isinstance(node, _Repeat) and node.counted:
        m = node.max if node.max >= 0 else node.min
        if m > budget:
            return False
        if m > 0:
            budget //= m
    if isinstance(node, _Repeat):
        return _repeat_size_ok(node.sub, budget)
    if isinstance(node, _Concat):
        return all(_repeat_size_ok(n, budget) for n in node.items)
    if isinstance(node, _Alt):
        return all(_repeat_size_ok(n, budget) for n in node.branches)
    return True


# -- what a pattern is --------------------------------------------------------------------


class Shape(IntEnum):
    """What the index may do instead of running a regex over values."""

    GENERAL = 0
    LITERALS = 1  # a finite set of values: look them up
    ANY = 2  # (?s).*  every value
    NON_EMPTY = 3  # (?s).+  every value but the empty one


def _shape(node: _Node) -> Shape:
    if (
        isinstance(node, _Repeat)
        and node.max == -1
        and node.min <= 1
        and isinstance(node.sub, _Chars)
        and node.sub.ranges == _ALL
    ):
        return Shape.ANY if node.min == 0 else Shape.NON_EMPTY
    return Shape.GENERAL


def _literals(node: _Node, at_start: bool = True, at_end: bool = True) -> set[str] | None:
    """The finite set of strings ``node`` matches, when small enough to enumerate.

    ``at_start``/``at_end`` say whether ``node`` begins/ends the whole pattern, where
    ``^`` and ``$`` are no-ops (``^(a|b)$`` is still the set {a, b}).
    """
    if isinstance(node, _Chars):
        size = sum(hi - lo + 1 for lo, hi in node.ranges)
        if size > _MAX_CLASS_EXPANSION:
            return None
        return {chr(cp) for lo, hi in node.ranges for cp in range(lo, hi + 1)}
    if isinstance(node, _Text):
        return {node.text}
    if isinstance(node, _Assert):
        no_op = (at_start and node.kind in "A^") or (at_end and node.kind in "z$")
        return {""} if no_op else None
    if isinstance(node, _Concat):
        acc = {""}
        last = len(node.items) - 1
        for k, item in enumerate(node.items):
            part = _literals(item, at_start and k == 0, at_end and k == last)
            if part is None or len(acc) * len(part) > _MAX_LITERALS:
                return None
            acc = {a + b for a in acc for b in part}
        return acc
    if isinstance(node, _Alt):
        out: set[str] = set()
        for branch in node.branches:
            part = _literals(branch, at_start, at_end)
            if part is None or len(out) + len(part) > _MAX_LITERALS:
                return None
            out |= part
        return out
    if node.max < 0:
        return None
    sub = _literals(node.sub, False, False)
    if sub is None:
        return None
    out, power = set(), {""}  # power: sub repeated k times
    for k in range(node.max + 1):
        if k >= node.min:
            out |= power
        if len(out) > _MAX_LITERALS or len(power) * len(sub) > _MAX_LITERALS:
            return None
        power = {a + b for a in power for b in sub}
    return out


# -- Python pattern generation ------------------------------------------------------------

_WORD = "[0-9A-Za-z_]"
_ASSERTIONS = {
    "A": r"\A",
    "z": r"\Z",  # Python's \Z is RE2's \z: the very end, never before a final newline
    "^": "(?m:^)",
    "$": "(?m:$)",
    "b": f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))",
    "B": f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))",
}


def _esc(cp: int) -> str:
    c = chr(cp)
    if c.isascii() and (c.isalnum() or c == "_"):
        return c
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def _emit(node: _Node, out: list[str]) -> None:
    """Append a Python pattern for ``node`` that needs no flags to mean the same."""
    if isinstance(node, _Chars):
        r = node.ranges
        if r == _ALL:
            out.append("(?s:.)")
        elif r == _NOT_NL:
            out.append(".")
        elif not r:
            out.append("[^\\x00-\\U0010ffff]")  # matches nothing
        elif len(r) == 1 and r[0][0] == r[0][1]:
            out.append(_esc(r[0][0]))
        else:
            out.append("[")
            out.extend(_esc(lo) if lo == hi else f"{_esc(lo)}-{_esc(hi)}" for lo, hi in r)
            out.append("]")
    elif isinstance(node, _Text):
        out.append(re.escape(node.text))
    elif isinstance(node, _Assert):
        out.append(_ASSERTIONS[node.kind])
    elif isinstance(node, _Concat):
        for item in node.items:
            _emit(item, out)
    elif isinstance(node, _Alt):
        out.append("(?:")
        for k, branch in enumerate(node.branches):
            if k:
                out.append("|")
            _emit(branch, out)
        out.append(")")
    else:
        out.append("(?:")
        _emit(node.sub, out)
        out.append(")")
        quantifier = {(0, -1): "*", (1, -1): "+", (0, 1): "?"}.get((node.min, node.max))
        hi = "" if node.max < 0 else str(node.max)
        out.append(quantifier or f"{{{node.min},{hi}}}")


@dataclass(frozen=True, slots=True)
class Compiled:
    """A pattern ready to test values: ``hit(value)`` is truthy when it matches."""

    shape: Shape
    literals: frozenset[str] | None
    hit: Callable[[str], object]


# -- linear-time engine for patterns that could backtrack badly --------------------------


def _risky(node: _Node) -> bool:
    """Whether Python's backtracking engine could take exponential or high-polynomial time
    on ``node``: a repeat around something that repeats or branches again (``(a+)+``,
    ``(a|ab)*``), or many variable-length repeats in a row (``.*a.*b.*c.*d``, ``a?a?a?a?``)."""
    loops = 0

    def walk(n: _Node, in_repeat: bool) -> bool:
        nonlocal loops
        if isinstance(n, _Repeat):
            if in_repeat:
                return True
            loops += n.max < 0 or n.max > n.min
            return walk(n.sub, n.max != 1)
        if isinstance(n, _Alt):
            return in_repeat or any(walk(b, in_repeat) for b in n.branches)
        if isinstance(n, _Concat):
            return any(walk(i, in_repeat) for i in n.items)
        return False

    return walk(node, False) or loops > _MAX_LOOPS


def _is_word(s: str, pos: int) -> bool:
    return 0 <= pos < len(s) and s[pos] in _WORD_CHARS


_WORD_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def _assertion_holds(kind: str, s: str, pos: int) -> bool:
    if kind == "A":
        return pos == 0
    if kind == "z":
        return pos == len(s)
    if kind == "^":
        return pos == 0 or s[pos - 1] == "\n"
    if kind == "$":
        return pos == len(s) or s[pos] == "\n"
    boundary = _is_word(s, pos - 1) != _is_word(s, pos)
    return boundary if kind == "b" else not boundary


class _PikeVm:
    """Full-match test by simulating all paths of the pattern at once (Thompson's NFA,
    as RE2 does): time linear in the value's length, whatever the pattern."""

    def __init__(self, node: _Node) -> None:
        # ("set", starts, ends) | ("char", c) | ("assert", kind) | ("split", x, y) |
        # ("jmp", x) | ("match",)
        self.prog: list[tuple] = []
        self.compile_pattern(node)
        self.prog.append(("match",))

    def _add(self, op: tuple) -> int:
        if len(self.prog) >= _MAX_PROGRAM:
            raise _Re2Error("expression too large", "")
        self.prog.append(op)
        return len(self.prog) - 1

    def compile_pattern(self, node: _Node) -> None:
        prog = self.prog
        if isinstance(node, _Chars):
            self._add(("set", [lo for lo, _ in node.ranges], [hi for _, hi in node.ranges]))
        elif isinstance(node, _Text):
            for c in node.text:
                self._add(("char", c))
        elif isinstance(node, _Assert):
            self._add(("assert", node.kind))
        elif isinstance(node, _Concat):
            for item in node.items:
                self.compile_pattern(item)
        elif isinstance(node, _Alt):
            exits = []
            for k, branch in enumerate(node.branches):
                last = k == len(node.branches) - 1
                split = -1 if last else self._add(("split",))
                self.compile_pattern(branch)
                if not last:
                    exits.append(self._add(("jmp",)))
                    prog[split] = ("split", split + 1, len(prog))
            for j in exits:
                prog[j] = ("jmp", len(prog))
        else:
            for _ in range(node.min):
                self.compile_pattern(node.sub)
            if node.max < 0:
                loop = self._add(("split",))
                self.compile_pattern(node.sub)
                self._add(("jmp", loop))
                prog[loop] = ("split", loop + 1, len(prog))
                return
            optional = []
            for _ in range(node.max - node.min):
                optional.append(self._add(("split",)))
                self.compile_pattern(node.sub)
            for k in optional:
                prog[k] = ("split", k + 1, len(prog))

    def _closure(self, pcs: list[int], s: str, pos: int) -> list[int]:
        """The consuming (and match) instructions reachable from ``pcs`` without input."""
        prog, out, seen, stack = self.prog, [], set(), pcs[::-1]
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            op = prog[pc]
            if op[0] == "jmp":
                stack.append(op[1])
            elif op[0] == "split":
                stack.extend((op[2], op[1]))
            elif op[0] == "assert":
                if _assertion_holds(op[1], s, pos):
                    stack.append(pc + 1)
            else:
                out.append(pc)
        return out

    def fullmatch(self, s: str) -> bool:
        prog = self.prog
        threads = self._closure([0], s, 0)
        for pos, c in enumerate(s):
            cp = ord(c)
            step = []
            for pc in threads:
                op = prog[pc]
                if op[0] == "char":
                    if op[1] == c:
                        step.append(pc + 1)
                elif op[0] == "set":
                    k = bisect.bisect_right(op[1], cp) - 1
                    if k >= 0 and cp <= op[2][k]:
                        step.append(pc + 1)
            if not step:
                return False
            threads = self._closure(step, s, pos + 1)
        return any(prog[pc][0] == "match" for pc in threads)


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Compiled:
    """Parse an RE2 pattern; raises ``BadDataError`` for what RE2 rejects."""
    if len(pattern) > _MAX_PATTERN_CHARS:
        raise BadDataError(f"regular expression longer than {_MAX_PATTERN_CHARS} characters")
    try:
        node = _Parser(pattern).parse()
        literals = _literals(node)
        if literals is not None:
            return literal_pattern(frozenset(literals))
        if _risky(node):
            return Compiled(Shape.GENERAL, None, _PikeVm(node).fullmatch)
    except _Re2Error as exc:
        raise BadDataError(str(exc)) from None
    out: list[str] = []
    _emit(node, out)
    return Compiled(_shape(node), None, re.compile("".join(out)).fullmatch)


def literal_pattern(values: frozenset[str]) -> Compiled:
    return Compiled(Shape.LITERALS, values, values.__contains__)
