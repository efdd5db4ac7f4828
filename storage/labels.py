"""Label rules: validation, the canonical form of a label set, and its key bytes.

The rules are Prometheus's: label names match ``[a-zA-Z_][a-zA-Z0-9_]*``, the value of
``__name__`` matches ``[a-zA-Z_:][a-zA-Z0-9_:]*``, names and values are valid UTF-8, a
name appears at most once, and a label with an empty value is the same as no label.
The canonical form sorts labels by name (byte order) and drops empty values.

The *key* of a series is its canonical labels written as ``name 0xFF value 0xFF`` for
each label; 0xFF never occurs in UTF-8, so a key splits back unambiguously. Keys are
what WAL series records carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _label_kernels as lk
from .batch import WriteBatch
from .interface import RejectReason

__all__ = ["NO_LIMITS", "Canonical", "LabelLimits", "batch_from_keys", "canonicalise",
           "format_labels"]

_MESSAGES = {
    lk.EMPTY_LABEL_SET: "series has no labels",
    lk.INVALID_LABEL_NAME: "invalid label name",
    lk.INVALID_METRIC_NAME: "invalid metric name",
    lk.INVALID_UTF8: "label name or value is not valid UTF-8",
    lk.DUPLICATE_LABEL_NAME: "duplicate label name",
    lk.TOO_MANY_LABELS: "too many labels",
    lk.LABEL_NAME_TOO_LONG: "label name too long",
    lk.LABEL_VALUE_TOO_LONG: "label value too long",
}
_LIMIT_CODES = (lk.TOO_MANY_LABELS, lk.LABEL_NAME_TOO_LONG, lk.LABEL_VALUE_TOO_LONG)
_NAME_LABEL = np.frombuffer(b"__name__", dtype=np.uint8).copy()


@dataclass(frozen=True)
class LabelLimits:
    """Per-series limits; a series over any of them is rejected with a 400."""

    max_labels: int = 128
    max_name_length: int = 1024
    max_value_length: int = 4096


NO_LIMITS = LabelLimits(max_labels=1 << 30, max_name_length=1 << 30, max_value_length=1 << 30)
"""For label sets that were accepted once already (WAL replay, blocks): re-check shape only."""


@dataclass(frozen=True)
class Canonical:
    """A batch's label sets validated, sorted and hashed (see ``canonicalise``)."""

    batch: WriteBatch
    order: np.ndarray  # label indices, series by series, in canonical order
    canon_start: np.ndarray  # [n_series + 1] into order
    status: np.ndarray  # uint8 [n_series], 0 = valid
    bad_label: np.ndarray  # int64 [n_series], offending label index or -1
    hashes: np.ndarray  # uint64 [n_series]

    def reject_reason(self, i: int) -> str:
        code = int(self.status[i])
        return RejectReason.LIMIT if code in _LIMIT_CODES else RejectReason.INVALID_LABELS

    def describe(self, i: int) -> str:
        """A message naming series ``i`` of the batch and what is wrong with it."""
        b = self.batch
        code = int(self.status[i])
        what = _MESSAGES.get(code, f"invalid series (code {code})")
        j = int(self.bad_label[i])
        if j >= 0:
            name = _text(b.buf, b.name_off[j], b.name_len[j])
            what = f"{what} {name!r}" if code != lk.LABEL_VALUE_TOO_LONG \
                else f"{what} (label {name!r}, {int(b.value_len[j])} bytes)"
        return f"{what} for series {self.labels_text(i)}"

    def labels_text(self, i: int) -> str:
        """Series ``i``'s labels as sent, printed for a message (shortened if huge)."""
        b = self.batch
        pairs = [(_text(b.buf, b.name_off[x], b.name_len[x]),
                  _text(b.buf, b.value_off[x], b.value_len[x]))
                 for x in range(int(b.label_start[i]), int(b.label_start[i + 1]))]
        return format_labels(pairs)


def _text(buf: np.ndarray, off: int, length: int, limit: int = 200) -> str:
    raw = buf[int(off):int(off) + min(int(length), limit)].tobytes()
    text = raw.decode("utf-8", errors="replace")
    return text + "…" if length > limit else text


def format_labels(pairs: list[tuple[str, str]] | dict[str, str], limit: int = 30) -> str:
    """``{a="1", b="2"}`` as Prometheus prints label sets (shortened past ``limit`` labels)."""
    items = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    shown = ", ".join(f'{n}="{v}"' for n, v in items[:limit])
    more = f", … {len(items) - limit} more" if len(items) > limit else ""
    return "{" + shown + more + "}"


def canonicalise(batch: WriteBatch, limits: LabelLimits,
                 known: np.ndarray | None = None) -> Canonical:
    """Validate, sort and hash every label set of ``batch`` in one kernel call; series
    whose ``known`` ref is set (found as sent, see ``RegistryView.find_sent``) are
    passed over."""
    n = batch.n_series
    order = np.empty(len(batch.name_off), dtype=np.int64)
    canon_start = np.empty(n + 1, dtype=np.int64)
    status = np.empty(n, dtype=np.uint8)
    bad_label = np.empty(n, dtype=np.int64)
    hashes = np.empty(n, dtype=np.uint64)
    if known is None:
        known = np.full(n, -1, dtype=np.int64)
    lk.canonicalise(
        batch.buf, batch.label_start, batch.name_off, batch.name_len,
        batch.value_off, batch.value_len,
        limits.max_labels, limits.max_name_length, limits.max_value_length, _NAME_LABEL,
        order, canon_start, status, bad_label, hashes, known,
    )
    return Canonical(batch, order, canon_start, status, bad_label, hashes)


def batch_from_keys(blob: np.ndarray, offsets: np.ndarray) -> WriteBatch:
    """A sample-less WriteBatch holding the label sets encoded as keys (for WAL replay)."""
    blob = np.asarray(blob, dtype=np.uint8)
    seps = np.flatnonzero(blob == lk.SEPARATOR)
    starts = np.concatenate(([0], seps[:-1] + 1)).astype(np.int64) if len(seps) else \
        np.empty(0, dtype=np.int64)
    lengths = (seps - starts).astype(np.int64)
    # every key holds an even number of separators; labels per key = separators / 2
    seps_before = np.searchsorted(seps, np.asarray(offsets, dtype=np.int64))
    label_start = (seps_before // 2).astype(np.int64)
    n_series = len(offsets) - 1
    return WriteBatch(
        buf=blob,
        label_start=label_start,
        name_off=starts[0::2],
        name_len=lengths[0::2],
        value_off=starts[1::2],
        value_len=lengths[1::2],
        sample_start=np.zeros(n_series + 1, dtype=np.int64),
        timestamps=np.empty(0, dtype=np.int64),
        values=np.empty(0, dtype=np.float64),
    )
