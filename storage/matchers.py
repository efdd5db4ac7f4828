"""Label matchers: ``=``, ``!=``, ``=~``, ``!~`` with Prometheus's semantics.

Regular expressions are fully anchored (``=~"a.*"`` matches the whole value) and follow
RE2 syntax as Prometheus 2.x does; ``.`` does not match a newline (Prometheus 3 changed
that). A matcher that matches the empty string also matches series without the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import BadDataError

__all__ = ["MatchType", "Matcher"]


class MatchType(IntEnum):
    """Matcher kinds, numbered as in the remote-read ``LabelMatcher.Type`` enum."""

    EQ = 0
    NEQ = 1
    RE = 2
    NRE = 3


@dataclass(frozen=True)
class Matcher:
    """One label matcher. Build with ``Matcher(MatchType.RE, "job", "api|web")``."""

    type: MatchType
    name: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type in (MatchType.RE, MatchType.NRE):
            try:
                compiled = re.compile(f"(?:{self.value})")
            except re.error as exc:
                raise BadDataError(f"invalid regular expression {self.value!r}: {exc}") from exc
            object.__setattr__(self, "_regex", compiled)

    def matches(self, value: str) -> bool:
        """Whether a label value (``""`` for an absent label) satisfies the matcher."""
        if self.type == MatchType.EQ:
            return value == self.value
        if self.type == MatchType.NEQ:
            return value != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(value) is not None
        return hit if self.type == MatchType.RE else not hit

    @property
    def matches_empty(self) -> bool:
        """Whether series lacking the label match (they have the empty value)."""
        return self.matches("")

    def __str__(self) -> str:
        op = {MatchType.EQ: "=", MatchType.NEQ: "!=", MatchType.RE: "=~", MatchType.NRE: "!~"}
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{op[self.type]}"{escaped}"'
