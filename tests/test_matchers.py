"""Label matchers follow Prometheus 2.x: RE2 syntax, fully anchored, ``.`` without newline."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.errors import BadDataError
from storage.matchers import Matcher, MatchType

EQ, NEQ, RE, NRE = MatchType.EQ, MatchType.NEQ, MatchType.RE, MatchType.NRE


def rx(pattern: str) -> Matcher:
    return Matcher(RE, "l", pattern)


# (pattern, value, whether =~ matches) as Prometheus 2.42 decides it.
REGEX_CASES = [
    # anchoring: the whole value must match
    ("foo", "foo", True),
    ("foo", "foobar", False),
    ("foo", "xfoo", False),
    ("foo|bar", "foobar", False),
    ("foo|bar", "bar", True),
    ("foo.*", "foobar", True),
    ("^foo$", "foo", True),
    ("a^b", "ab", False),
    # empty values
    ("", "", True),
    ("", "a", False),
    ("a|", "", True),
    ("()", "", True),
    (".*", "", True),
    (".+", "", False),
    ("^*", "", True),
    # newlines: . and $ as in RE2, not as in Python
    (".*", "a\nb", False),
    (".+", "\n", False),
    ("(?s).*", "a\nb", True),
    ("(?s:.)", "\n", True),
    ("[^a]", "\n", True),
    ("[^\\n]", "\n", False),
    ("a$\\n", "a\n", False),
    ("(?m)a$\\n^b", "a\nb", True),
    ("a\\z", "a", True),
    ("\\Aa", "a", True),
    # case-insensitive, scoped to the rest of the group, across alternatives
    ("(?i)abc", "aBC", True),
    ("a(?i)b", "aB", True),
    ("a(?i)b", "AB", False),
    ("a(?i)b|c", "C", True),
    ("(?i:a)b", "Ab", True),
    ("(?i:a)b", "AB", False),
    ("(?i)a(?-i)b", "AB", False),
    ("(?i)k", "\u212a", True),  # Kelvin sign folds to k
    ("(?i)σ", "ς", True),
    ("(?i)[a-c]+", "ABC", True),
    ("(?i)[^a]", "A", False),
    ("(?i)\\W", "\u212a", False),
    ("(?U)a*", "aaa", True),
    ("a*?", "aaa", True),
    # classes are ASCII unless \p says otherwise
    ("\\d", "\u0663", False),
    ("\\w", "é", False),
    ("\\s", "\v", False),
    ("[[:space:]]", "\v", True),
    ("[[:alpha:]]+", "abXY", True),
    ("[[:alpha:]]+", "a1", False),
    ("[[:^digit:]]", "1", False),
    ("[\\d-z]", "-", True),
    ("[\\d-z]", "a", False),
    ("[]a]", "]", True),
    ("\\pL", "é", True),
    ("\\p{Lu}", "é", False),
    ("\\PL", "1", True),
    ("\\p{^L}", "1", True),
    ("\\p{Any}", "\n", True),
    ("é\\b", "é", False),
    ("é\\B", "é", True),
    ("\\bfoo\\b", "foo", True),
    # escapes
    ("\\Q.*\\E", ".*", True),
    ("\\Q.*\\E", "ab", False),
    ("\\Qab", "ab", True),
    ("\\x41\\x{1F600}", "A😀", True),
    ("\\101", "A", True),
    ("\\0", "\x00", True),
    ("\\_\\-", "_-", True),
    # counted repeats; a brace that is not one is text
    ("a{2}", "aa", True),
    ("a{1,2}", "aaa", False),
    ("a{2,}", "aaaa", True),
    ("a{,3}", "a{,3}", True),
    ("a{,3}", "aa", False),
    ("a{01}", "a{01}", True),
    ("x{", "x{", True),
    ("(?P<1a>x)(?<n>y)", "xy", True),
    # a repeat binds to the last character only
    ("ab*", "abbb", True),
    ("ab*", "abab", False),
    ("ab{2}", "abb", True),
    ("ab{2}", "abab", False),
    ("ab{,2}", "ab{,2}", True),
    ("a]b}", "a]b}", True),
]


@pytest.mark.parametrize("pattern,value,want", REGEX_CASES)
def test_regex_semantics(pattern: str, value: str, want: bool) -> None:
    assert rx(pattern).matches(value) is want
    assert Matcher(NRE, "l", pattern).matches(value) is not want
    mask = rx(pattern).values_matching([value, value])
    assert mask.dtype == bool and list(mask) == [want, want]


INVALID = [
    "(?=a)",
    "(?!a)",
    "(?<=a)",
    "(?<!a)",  # lookarounds
    "(a)\\1",
    "(?P<n>a)(?P=n)",
    "\\k<n>",  # backreferences
    "(?>a)",
    "a*+",
    "a++",
    "a?+",  # atomic groups, possessive repeats
    "(?(1)a|b)",
    "(?#comment)",
    "(?x)a",
    "(?a)",
    "(?i-)",  # other Perl/Python syntax
    "a**",
    "a{2}{3}",
    "*a",
    "a|*",  # repeats
    "a{1001}",
    "(a{100}){100}",
    "a{2,1}",  # repeat counts
    "\\Z",
    "\\e",
    "\\C",
    "\\G",
    "\\8",
    "\\",
    "\\x{110000}",
    "\\xZ",  # escapes
    "(",
    ")",
    "[a",
    "[z-a]",
    "[[:foo:]]",
    "(?P<>a)",
    "(?P<a-b>x)",  # structure
    "\\p{Foo}",
    "\\p{}",
]


@pytest.mark.parametrize("pattern", INVALID)
def test_invalid_regex_is_bad_data(pattern: str) -> None:
    with pytest.raises(BadDataError, match="error parsing regexp"):
        rx(pattern)


def test_nesting_is_bounded() -> None:
    assert rx("(" * 50 + "a" + ")" * 50).matches("a")
    with pytest.raises(BadDataError, match="nests too deeply"):
        rx("(" * 500 + "a" + ")" * 500)


def test_equality_matchers() -> None:
    assert Matcher(EQ, "job", "api").matches("api")
    assert not Matcher(EQ, "job", "api").matches("api2")
    assert Matcher(NEQ, "job", "api").matches("")
    assert Matcher(EQ, "job", "").matches_empty
    assert not Matcher(EQ, "job", "x").matches_empty
    assert Matcher(NRE, "job", "x").matches_empty
    assert not rx(".+").matches_empty


@pytest.mark.parametrize(
    "matcher,literals",
    [
        (rx("a|b|c"), {"a", "b", "c"}),
        (rx("(?:foo|bar)"), {"foo", "bar"}),
        (rx("foo\\.bar"), {"foo.bar"}),
        (rx("^(a|b)$"), {"a", "b"}),
        (rx("a|"), {"a", ""}),
        (rx("[ab]c"), {"ac", "bc"}),
        (rx("x?"), {"", "x"}),
        (rx("(?i)a"), {"a", "A"}),
        (rx("a^b"), None),
        (rx("a+"), None),
        (rx(".*"), None),
        (rx("x\\b"), None),
        (rx("[a-z]"), None),
        (Matcher(EQ, "l", "v"), {"v"}),
        (Matcher(NEQ, "l", "v"), {"v"}),
        (Matcher(NRE, "l", "a|b"), {"a", "b"}),
    ],
)
def test_literal_set(matcher: Matcher, literals: set[str] | None) -> None:
    got = matcher.literal_set()
    assert got == (None if literals is None else frozenset(literals))


def test_large_alternation_is_a_literal_set() -> None:
    values = [f"pod-{i}" for i in range(5000)]
    m = rx("|".join(values))
    assert m.literal_set() == frozenset(values)
    assert m.matches("pod-4999") and not m.matches("pod-5000")


@pytest.mark.parametrize(
    "matcher,match_all,nonempty",
    [
        (rx("(?s).*"), True, False),
        (rx("(?s).+"), False, True),
        (rx(".*"), False, False),  # '.' does not match a newline in Prometheus 2
        (rx(".+"), False, False),
        (Matcher(NEQ, "l", ""), False, True),
        (Matcher(NRE, "l", ""), False, True),
        (Matcher(EQ, "l", ""), False, False),
        (Matcher(NRE, "l", "[^\\x00-\\x{10FFFF}]"), True, False),
        (rx("a"), False, False),
    ],
)
def test_match_all_and_nonempty(matcher: Matcher, match_all: bool, nonempty: bool) -> None:
    assert matcher.is_match_all is match_all
    assert matcher.is_match_nonempty is nonempty
    values = ["", "a", "a\nb", "xyz"]
    mask = matcher.values_matching(values)
    if match_all:
        assert mask.all()
    if nonempty:
        assert list(mask) == [False, True, True, True]


def test_values_matching_takes_any_sequence() -> None:
    values = np.array(["api", "web", "db", ""])
    assert list(rx("api|db").values_matching(values)) == [True, False, True, False]
    assert list(Matcher(NRE, "l", "a.*").values_matching(values)) == [False, True, True, True]
    assert list(Matcher(NEQ, "l", "web").values_matching(list(values))) == [True, False, True, True]
    assert rx("x").values_matching([]).shape == (0,)


def test_identity_and_str() -> None:
    assert rx("a|b") == rx("a|b") and hash(rx("a|b")) == hash(rx("a|b"))
    assert rx("a") != Matcher(NRE, "l", "a")
    assert str(Matcher(NRE, "job", 'a"\\\n')) == 'job!~"a\\"\\\\\\n"'


# Patterns over a tiny alphabet: whatever the literal-set fast path answers must be
# what the generated regex answers.
_PIECES = ["a", "b", "|", "(", ")", "?", "[ab]", "(?i)", "{2}", "{0,2}", "^", "$", "."]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=8))
def test_literal_set_agrees_with_regex(pieces: list[str]) -> None:
    from storage import _re2 as impl

    pattern = "".join(pieces)
    try:
        node = impl._Parser(pattern).parse()
    except impl._Re2Error:
        return
    literals = impl._literals(node)
    if literals is None:
        return
    out: list[str] = []
    impl._emit(node, out)
    regex = re.compile("".join(out))
    for n in range(5):
        for chars in itertools.product("aAb\n", repeat=n):
            value = "".join(chars)
            assert (value in literals) == (regex.fullmatch(value) is not None), (pattern, value)


# Patterns that could make a backtracking engine run for ages are answered by a
# linear-time simulation; it must agree with the backtracking engine on small inputs.
_VM_PIECES = _PIECES + ["*", "+", "\\b", "(?m)", "(?s)", "\\n", "[^a]"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_VM_PIECES), max_size=8))
def test_linear_engine_agrees_with_regex(pieces: list[str]) -> None:
    from storage import _re2 as impl

    pattern = "".join(pieces)
    try:
        node = impl._Parser(pattern).parse()
    except impl._Re2Error:
        return
    out: list[str] = []
    impl._emit(node, out)
    regex = re.compile("".join(out))
    vm = impl._PikeVm(node)
    for n in range(4):
        for chars in itertools.product("aAb\n", repeat=n):
            value = "".join(chars)
            assert vm.fullmatch(value) == (regex.fullmatch(value) is not None), (pattern, value)


@pytest.mark.parametrize(
    "pattern,value,want",
    [
        ("(a+)+b", "a" * 64 + "c", False),
        ("(a|a)*b", "a" * 64, False),
        ("(x+x+)+y", "x" * 64 + "y", True),
        (".*a.*b.*c.*d.*e", "abcd" * 100, False),
        ("(\\w+\\s?)*!", "word " * 50, False),
        ("a?" * 40 + "a" * 40, "a" * 39, False),
    ],
)
def test_catastrophic_patterns_stay_linear(pattern: str, value: str, want: bool) -> None:
    # A backtracking engine needs about 2**64 steps for some of these.
    assert rx(pattern).matches(value) is want
    assert list(rx(pattern).values_matching([value])) == [want]
