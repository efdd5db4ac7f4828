"""Seeded, named workload shapes: which series exist and the values they take scrape by scrape.

A workload is a fleet of scrape targets ("hosts"). Every host follows one of a
few *profiles* (a list of :class:`SeriesSpec`, e.g. a 4-CPU VM or a 32-CPU
server), so the fleet's label sets are built from per-profile byte templates
plus the host's ``instance`` label, and values are generated per host with
numpy from a host-seeded random generator. Nothing is stored per series except
a few numpy columns, so a million active series stay cheap.

The same ``(name, seed, size)`` always gives the same series and values; the
values also depend on how many rounds are drawn at once (see
:meth:`ValueStream.advance`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from benchmarks._encode import Segments, encode_label

__all__ = [
    "WORKLOADS",
    "Kind",
    "Profile",
    "SeriesSpec",
    "ValueStream",
    "Workload",
    "make_workload",
]

_INSTANCE = "instance"
_MAX_HOSTS = 1 << 24  # instance addresses are drawn from 10.0.0.0/8
_MEAN_UPTIME_S = 20 * 86400.0  # counters start where ~3 weeks of uptime left them


class Kind(IntEnum):
    """How a series' value evolves from one scrape to the next."""

    COUNTER = 0  # grows by random non-negative increments around ``rate`` per second
    GAUGE = 1  # random walk reflected inside [lo, hi]
    CONST = 2  # never changes (info metrics, sizes, limits)
    BUCKET = 3  # cumulative histogram bucket (or _count): share ``cdf`` of the group's observations
    SUM = 4  # histogram _sum: the group's observations times a mean of ``scale``


@dataclass(frozen=True)
class SeriesSpec:
    """One series of a host profile: its labels (without ``instance``) and its value model.

    Values are integers in units of ``1/div`` (e.g. ``div=100`` for CPU seconds
    that node_exporter reports with centisecond resolution), which is what makes
    real counters compress the way they do.
    """

    labels: dict[str, str]
    kind: Kind
    div: int = 1
    rate: float = 0.0  # COUNTER: mean increase per second; BUCKET/SUM: observations per second
    shape: float = 4.0  # COUNTER: gamma shape of increments (1 / cv^2); large = steady
    start: float = 0.0  # COUNTER: value before uptime; CONST: the value (any float)
    lo: float = 0.0  # GAUGE bounds
    hi: float = 0.0
    step: float = 0.01  # GAUGE: standard deviation of a step, as a share of hi - lo
    group: int = -1  # BUCKET/SUM: which histogram of the host
    cdf: float = 1.0  # BUCKET: share of observations <= le
    scale: float = 0.0  # SUM: mean observed value


@dataclass(frozen=True)
class Profile:
    """A kind of host: its series specs, and how often it occurs in the fleet."""

    name: str
    weight: float
    specs: tuple[SeriesSpec, ...]


@dataclass
class _Columns:
    """A profile's specs as numpy columns, plus its label bytes split around ``instance``."""

    kind: np.ndarray
    div: np.ndarray
    rate: np.ndarray
    shape: np.ndarray
    start: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    step: np.ndarray
    group: np.ndarray
    cdf: np.ndarray
    scale: np.ndarray
    n_groups: int
    by_kind: dict[Kind, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, specs: tuple[SeriesSpec, ...]) -> _Columns:
        def col(name: str, dtype: type) -> np.ndarray:
            return np.array([getattr(s, name) for s in specs], dtype=dtype)

        cols = cls(
            kind=col("kind", np.int64),
            div=col("div", np.float64),
            rate=col("rate", np.float64),
            shape=col("shape", np.float64),
            start=col("start", np.float64),
            lo=col("lo", np.float64),
            hi=col("hi", np.float64),
            step=col("step", np.float64),
            group=col("group", np.int64),
            cdf=col("cdf", np.float64),
            scale=col("scale", np.float64),
            n_groups=1 + max((s.group for s in specs), default=-1),
        )
        cols.by_kind = {k: np.flatnonzero(cols.kind == k) for k in Kind}
        return cols


def _label_templates(profiles: list[Profile]) -> tuple[Segments, Segments, np.ndarray]:
    """Encoded labels sorting before and after ``instance`` for every spec of every profile.

    Returns (before, after, base) where spec ``t`` of profile ``p`` is row
    ``base[p] + t`` of both segment sets.
    """
    before: list[bytes] = []
    after: list[bytes] = []
    for profile in profiles:
        for spec in profile.specs:
            if _INSTANCE in spec.labels:
                raise ValueError(f"profile {profile.name}: specs must not set {_INSTANCE!r}")
            pairs = sorted(spec.labels.items())
            before.append(b"".join(encode_label(k, v) for k, v in pairs if k < _INSTANCE))
            after.append(b"".join(encode_label(k, v) for k, v in pairs if k > _INSTANCE))
    base = np.cumsum([0] + [len(p.specs) for p in profiles])[:-1]
    return _segments(before), _segments(after), base


def _segments(rows: list[bytes]) -> Segments:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    source = np.frombuffer(b"".join(rows) or b"\0", dtype=np.uint8)
    return Segments(source, starts, lengths)


def _instance(host: int) -> str:
    return f"10.{host >> 16 & 255}.{host >> 8 & 255}.{host & 255}:9100"


class Workload:
    """A fleet of scrape targets with a fixed set of active series, numbered 0..n_series-1.

    Series are numbered host by host, in profile order within a host. Either
    ``hosts`` (whole hosts) or ``series`` (exact count; the last host is cut
    short) sets the size. ``first_host`` shifts the fleet's ``instance``
    addresses, so two workloads can have disjoint series.
    """

    def __init__(
        self,
        name: str,
        profiles: list[Profile],
        *,
        hosts: int | None = None,
        series: int | None = None,
        seed: int = 1,
        interval_s: float = 15.0,
        first_host: int = 0,
    ) -> None:
        if (hosts is None) == (series is None):
            raise ValueError("give exactly one of hosts or series")
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.name = name
        self.seed = seed
        self.interval_ms = round(interval_s * 1000)
        self.profiles = profiles
        self._columns = [_Columns.of(p.specs) for p in profiles]
        sizes = np.array([len(p.specs) for p in profiles], dtype=np.int64)
        weights = np.array([p.weight for p in profiles], dtype=np.float64)
        rng = np.random.default_rng([seed, 0])
        if hosts is not None:
            if not 1 <= hosts <= _MAX_HOSTS:
                raise ValueError(f"hosts must be in 1..{_MAX_HOSTS}")
            host_profile = rng.choice(len(profiles), size=hosts, p=weights / weights.sum())
        else:
            assert series is not None
            if series < 1:
                raise ValueError("series must be positive")
            # Enough hosts even if every one had the smallest profile; the first
            # draws do not depend on how many are drawn.
            drawn = rng.choice(
                len(profiles), size=-(-series // int(sizes.min())), p=weights / weights.sum()
            )
            needed = int(np.searchsorted(np.cumsum(sizes[drawn]), series)) + 1
            host_profile = drawn[:needed]
            if needed > _MAX_HOSTS:
                raise ValueError(f"more than {_MAX_HOSTS} hosts needed")
        self.host_profile = host_profile.astype(np.int64)
        host_sizes = sizes[self.host_profile]
        self.host_start = np.concatenate([[0], np.cumsum(host_sizes)]).astype(np.int64)
        self.n_series = int(self.host_start[-1]) if series is None else series
        self.n_hosts = len(self.host_profile)
        if not 0 <= first_host <= _MAX_HOSTS - self.n_hosts:
            raise ValueError(f"first_host must leave the fleet inside {_MAX_HOSTS} hosts")
        # Prometheus spreads targets' scrapes over the interval; a host keeps its offset.
        self.first_host = first_host
        self.host_offset_ms = np.random.default_rng([seed, 1]).integers(
            0, self.interval_ms, size=self.n_hosts
        )
        self._before, self._after, self._profile_base = _label_templates(profiles)
        self._instances = _segments(
            [encode_label(_INSTANCE, _instance(first_host + h)) for h in range(self.n_hosts)]
        )

    def host_of(self, series: np.ndarray) -> np.ndarray:
        """Host index of each series number."""
        return np.searchsorted(self.host_start, series, side="right") - 1

    def label_segments(self, series: np.ndarray) -> list[Segments]:
        """Parts whose row-wise concatenation is each series' encoded, sorted labels."""
        series = np.asarray(series, dtype=np.int64)
        host = self.host_of(series)
        template = self._profile_base[self.host_profile[host]] + (series - self.host_start[host])
        return [
            _pick(self._before, template),
            _pick(self._instances, host),
            _pick(self._after, template),
        ]

    def host_instance(self, host: int) -> str:
        """The ``instance`` label value of every series of a host."""
        return _instance(self.first_host + host)

    def host_series(self, host: int) -> int:
        """How many series of the workload belong to a host."""
        return int(min(self.host_start[host + 1], self.n_series) - self.host_start[host])

    def scrape_offsets_ms(self, series: np.ndarray) -> np.ndarray:
        """Offset of each series' scrapes within the interval (that of its host)."""
        return self.host_offset_ms[self.host_of(np.asarray(series, dtype=np.int64))]

    def stream(self, start: int, stop: int) -> ValueStream:
        """Values of series ``start..stop-1``, scrape after scrape."""
        if not 0 <= start < stop <= self.n_series:
            raise ValueError(f"series range {start}..{stop} outside 0..{self.n_series}")
        return ValueStream(self, start, stop)

    def describe(self) -> dict[str, object]:
        """Plain facts for reports: shape, size, seed and the profile mix."""
        counts = np.bincount(self.host_profile, minlength=len(self.profiles))
        return {
            "workload": self.name,
            "series": self.n_series,
            "hosts": self.n_hosts,
            "seed": self.seed,
            "interval_s": self.interval_ms / 1000,
            "profiles": {
                p.name: {"hosts": int(c), "series_per_host": len(p.specs)}
                for p, c in zip(self.profiles, counts)
            },
        }


def _pick(segments: Segments, rows: np.ndarray) -> Segments:
    return Segments(segments.source, segments.starts[rows], segments.lengths[rows])


class ValueStream:
    """Successive scrape values of a contiguous range of series.

    State is kept per host (a random generator and one integer per series of
    the host), so a stream over a range that starts or ends inside a host
    generates that host's other series too and drops them.
    """

    def __init__(self, workload: Workload, start: int, stop: int) -> None:
        self._workload = workload
        self._start, self._stop = start, stop
        first = int(workload.host_of(np.array([start]))[0])
        last = int(workload.host_of(np.array([stop - 1]))[0])
        self._hosts = [_HostState(workload, h) for h in range(first, last + 1)]

    def advance(self, rounds: int) -> np.ndarray:
        """Values of the next ``rounds`` scrapes, shape (rounds, stop - start), float64.

        The values drawn depend on how the rounds are split into calls, not
        only on the workload and seed.
        """
        out = np.empty((rounds, self._stop - self._start), dtype=np.float64)
        for host in self._hosts:
            values = host.advance(rounds, self._workload.interval_ms / 1000)
            lo = max(host.first_series, self._start)
            hi = min(host.first_series + values.shape[1], self._stop)
            out[:, lo - self._start : hi - self._start] = values[
                :, lo - host.first_series : hi - host.first_series
            ]
        return out


class _HostState:
    """Random generator and integer state (in 1/div units) of one host's series."""

    def __init__(self, workload: Workload, host: int) -> None:
        self.first_series = int(workload.host_start[host])
        cols = workload._columns[int(workload.host_profile[host])]
        self.cols = cols
        rng = np.random.default_rng([workload.seed, 2, host])
        self.rng = rng
        n = len(cols.kind)
        # Hosts differ: per-series rate multipliers and per-histogram traffic.
        self.rate = cols.rate * rng.lognormal(0.0, 0.5, n)
        self.group_rate = np.zeros(cols.n_groups)
        members = cols.group >= 0
        if cols.n_groups:
            group_mult = rng.lognormal(0.0, 0.7, cols.n_groups)
            self.group_rate[cols.group[members]] = (
                cols.rate[members] * group_mult[cols.group[members]]
            )
        uptime = min(rng.lognormal(math.log(_MEAN_UPTIME_S), 0.8), 400 * 86400.0)
        state = np.zeros(n)
        k = cols.by_kind
        state[k[Kind.COUNTER]] = (cols.start + self.rate * uptime)[k[Kind.COUNTER]]
        state[k[Kind.GAUGE]] = rng.uniform(cols.lo, cols.hi)[k[Kind.GAUGE]]
        observed = np.where(members, self.group_rate[np.maximum(cols.group, 0)] * uptime, 0.0)
        state[k[Kind.BUCKET]] = (observed * cols.cdf)[k[Kind.BUCKET]]
        state[k[Kind.SUM]] = (observed * cols.scale)[k[Kind.SUM]]
        self.state = np.rint(state * cols.div).astype(np.int64)

    def advance(self, rounds: int, dt: float) -> np.ndarray:
        cols, rng, k = self.cols, self.rng, self.cols.by_kind
        out = np.empty((rounds, len(cols.kind)), dtype=np.int64)

        c = k[Kind.COUNTER]
        mean = self.rate[c] * dt * cols.div[c]
        shape = cols.shape[c]
        inc = mean * rng.gamma(shape, 1.0 / shape, (rounds, len(c)))
        out[:, c] = self.state[c] + np.cumsum(_stochastic_round(inc, rng), axis=0)

        g = k[Kind.GAUGE]
        lo, hi = cols.lo[g] * cols.div[g], cols.hi[g] * cols.div[g]
        steps = np.rint(rng.standard_normal((rounds, len(g))) * cols.step[g] * (hi - lo))
        out[:, g] = _reflect(self.state[g] + np.cumsum(steps, axis=0), lo, hi)

        if cols.n_groups:
            observed = _stochastic_round(
                self.group_rate * dt * rng.gamma(8.0, 1.0 / 8.0, (rounds, cols.n_groups)), rng
            )
            b = k[Kind.BUCKET]
            # floor keeps buckets cumulative: a larger le never gets fewer observations
            bucket_inc = np.floor(observed[:, cols.group[b]] * cols.cdf[b])
            out[:, b] = self.state[b] + np.cumsum(bucket_inc, axis=0)
            s = k[Kind.SUM]
            sum_inc = observed[:, cols.group[s]] * cols.scale[s] * cols.div[s]
            sum_inc *= rng.lognormal(0.0, 0.2, sum_inc.shape)
            out[:, s] = self.state[s] + np.cumsum(_stochastic_round(sum_inc, rng), axis=0)

        self.state = out[-1].copy()
        values = out / cols.div
        # Constants bypass the integer state: some (unlimited sizes) exceed int64.
        values[:, k[Kind.CONST]] = cols.start[k[Kind.CONST]]
        return values


def _stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Round to an integer, up with probability equal to the fraction (unbiased)."""
    return np.floor(x + rng.random(x.shape))


def _reflect(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fold values into [lo, hi] as a walk bouncing off both walls would."""
    width = hi - lo
    span = np.where(width > 0, 2 * width, 1.0)
    y = np.mod(x - lo, span)
    y = np.where(y > width, span - y, y)
    return np.where(width > 0, lo + y, lo)


def _node_profiles() -> list[Profile]:
    from benchmarks._node import node_profiles

    return node_profiles()


WORKLOADS: dict[str, Callable[[], list[Profile]]] = {"node": _node_profiles}
"""Workload shapes by name; each returns the host profiles of its fleet."""


def make_workload(
    name: str,
    *,
    hosts: int | None = None,
    series: int | None = None,
    seed: int = 1,
    interval_s: float = 15.0,
    first_host: int = 0,
) -> Workload:
    """The named workload, sized by whole hosts or by an exact series count."""
    try:
        profiles = WORKLOADS[name]()
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None
    return Workload(
        name,
        profiles,
        hosts=hosts,
        series=series,
        seed=seed,
        interval_s=interval_s,
        first_host=first_host,
    )
