"""Label matchers: ``=``, ``!=``, ``=~``, ``!~`` with Prometheus's semantics.

Regular expressions follow Prometheus 2.x, which compiles ``^(?:re)$`` with Go's RE2
syntax: the whole value must match, ``.`` does not match a newline (Prometheus 3 changed
that), ``^``/``$`` anchor the whole text unless ``(?m)``. Patterns are parsed by RE2's
rules (``storage._re2``), not handed to Python's ``re``, which reads many corners of the
syntax differently. What RE2 rejects, including lookarounds, backreferences, atomic
groups and possessive repeats, raises ``BadDataError``.

The parse also tells the index what a pattern is: a finite set of literal values
(``a|b|c``) that can be looked up instead of scanned, or "everything" (``(?s).*``).
Patterns on which a backtracking engine could take exponential time (``(a+)+b``) run on
a linear-time NFA simulation instead, since a regex comes from any query's author.

A matcher that matches the empty string also matches series without the label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ._re2 import Compiled, Shape, compile_pattern, literal_pattern

__all__ = ["MatchType", "Matcher"]


class MatchType(IntEnum):
    """Matcher kinds, numbered as in the remote-read ``LabelMatcher.Type`` enum."""

    EQ = 0
    NEQ = 1
    RE = 2
    NRE = 3


# -- matcher ------------------------------------------------------------------------------

_OPS = {MatchType.EQ: "=", MatchType.NEQ: "!=", MatchType.RE: "=~", MatchType.NRE: "!~"}


@dataclass(frozen=True)
class Matcher:
    """One label matcher. Build with ``Matcher(MatchType.RE, "job", "api|web")``.

    Construction validates a regex and raises ``BadDataError`` when RE2 would reject it.
    Immutable and safe to share between threads.
    """

    type: MatchType
    name: str
    value: str
    _compiled: Compiled = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type in (MatchType.RE, MatchType.NRE):
            compiled = compile_pattern(self.value)
        else:
            compiled = literal_pattern(frozenset((self.value,)))
        object.__setattr__(self, "_compiled", compiled)

    @property
    def _negated(self) -> bool:
        return self.type in (MatchType.NEQ, MatchType.NRE)

    def matches(self, value: str) -> bool:
        """Whether a label value (``""`` for an absent label) satisfies the matcher."""
        return bool(self._compiled.hit(value)) != self._negated

    def values_matching(self, values: Sequence[str]) -> np.ndarray:
        """Boolean mask of the ``values`` that satisfy the matcher.

        Meant for filtering a label's distinct values: one C-level pass (a set look-up
        for literal patterns, the compiled regex otherwise), no Python call per value.
        """
        c, n = self._compiled, len(values)
        if c.shape == Shape.ANY:
            hit = np.ones(n, dtype=bool)
        else:
            hit = np.fromiter(map(bool, map(c.hit, values)), dtype=bool, count=n)
        return ~hit if self._negated else hit

    def literal_set(self) -> frozenset[str] | None:
        """The finite set of values the pattern (the value of ``=``/``!=``, the regex of
        ``=~``/``!~``) matches, or None when it is not small and finite.

        ``=`` and ``=~`` accept exactly these values, ``!=`` and ``!~`` every other one;
        so ``=~"a|b"`` can be answered by two look-ups instead of a scan.
        """
        return self._compiled.literals

    @property
    def is_match_all(self) -> bool:
        """Whether every value, the empty one included, satisfies the matcher.

        ``=~".*"`` is not such a matcher in Prometheus 2, since ``.`` does not match a
        newline; ``=~"(?s).*"`` is.
        """
        c = self._compiled
        if self.type == MatchType.RE:
            return c.shape == Shape.ANY
        return self.type == MatchType.NRE and c.literals == frozenset()

    @property
    def is_match_nonempty(self) -> bool:
        """Whether exactly the non-empty values satisfy the matcher, i.e. the series
        that have the label at all: ``!=""``, ``!~""``, ``=~"(?s).+"``."""
        c = self._compiled
        if self.type == MatchType.RE:
            return c.shape == Shape.NON_EMPTY
        return self._negated and c.literals == frozenset(("",))

    @property
    def matches_empty(self) -> bool:
        """Whether series lacking the label match (they have the empty value)."""
        return self.matches("")

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{_OPS[self.type]}"{escaped}"'
