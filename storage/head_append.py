"""The head's write path: validate, resolve series, check samples, log, store, sync.

Order matters for durability and replay: under the head's lock, new series get their
refs and a WAL series record, accepted samples get a samples record *after* it, and both
go to the WAL in one write before the samples become visible. The fsync that makes the
batch durable happens after the lock is released, so concurrent appends share it.
If the WAL cannot be written or synced, the head refuses further writes until restart:
retried batches would otherwise be taken as duplicates of samples that never became
durable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from . import _append_kernels as ak
from . import record
from ._label_kernels import NO_SAMPLES
from .batch import WriteBatch
from .errors import PromstoreError, StorageError, UnavailableError
from .interface import AppendResult, RejectReason
from .labels import Canonical, canonicalise

if TYPE_CHECKING:
    from .head import Head

__all__ = ["append", "append_then"]

MAX_ERROR_MESSAGES = 10
_NOT_CREATED = -3  # ref reported for a series skipped because it has no samples

_REASONS = {
    ak.OUT_OF_ORDER: RejectReason.OUT_OF_ORDER,
    ak.DUPLICATE_TIMESTAMP: RejectReason.DUPLICATE_TIMESTAMP,
    ak.OUT_OF_BOUNDS: RejectReason.OUT_OF_BOUNDS,
    ak.TOO_MANY_SERIES: RejectReason.TOO_MANY_SERIES,
}
_SAMPLE_MESSAGES = {
    ak.OUT_OF_ORDER: "out of order sample",
    ak.DUPLICATE_TIMESTAMP: "duplicate sample for timestamp",
    ak.OUT_OF_BOUNDS: "out of bounds",
    ak.TOO_MANY_SERIES: "series limit reached",
}


def append(head: Head, batch: WriteBatch) -> AppendResult:
    """Store the valid samples of ``batch``; return once they are durable."""
    result, position = _log_and_store(head, batch)
    if position is not None:
        try:
            head.wal.sync(position)  # type: ignore[union-attr]
        except StorageError as exc:
            head.failed = f"write-ahead log sync failed: {exc}"
            raise
    return result


def append_then(head: Head, batch: WriteBatch,
                done: Callable[[AppendResult | None, BaseException | None], None]) -> None:
    """Store the valid samples of ``batch``; call ``done(result, None)`` once they are
    durable, or ``done(None, error)`` if they cannot be stored or made durable. No
    thread waits for the fsync: the WAL's sync thread makes the call (see
    ``WAL.when_durable``), or this thread when nothing needs one."""
    try:
        result, position = _log_and_store(head, batch)
    except Exception as exc:
        done(None, exc)
        return
    if position is None:
        done(result, None)
        return

    def durable(error: PromstoreError | None) -> None:
        if error is None:
            done(result, None)
            return
        if isinstance(error, StorageError):
            head.failed = f"write-ahead log sync failed: {error}"
        done(None, error)

    head.wal.when_durable(position, durable)  # type: ignore[union-attr]


def _log_and_store(head: Head, batch: WriteBatch) -> tuple[AppendResult, int | None]:
    """Everything but the fsync: the result, and the WAL position to sync (None when
    nothing was logged)."""
    # Outside the lock, in GIL-free kernels. Most series of a request are known: a
    # snapshot of the registry finds them by their labels as sent, which also proves
    # them valid; only the others are validated here and resolved under the lock.
    known = head.registry.published.find_sent(batch, head.options.labels)
    canon = canonicalise(batch, head.options.labels, known)
    per_series = np.diff(batch.sample_start)
    has_samples = per_series > 0
    # Series that carry no samples are not created, as in Prometheus (nor reported).
    canon.status[~has_samples & (canon.status == 0)] = NO_SAMPLES
    outcome = np.empty(batch.n_samples, dtype=np.uint8)
    position = None
    with head.lock:
        if head.wal is None or head.failed is not None:
            raise UnavailableError(head.failed or "storage is closed")
        refs, created = head.registry.resolve(canon, known)
        head.state.reserve(head.registry.n_series)
        head.max_time = ak.check_samples(
            refs, batch.sample_start, batch.timestamps, batch.values.view(np.uint64),
            head.state.last_t, head.state.last_v, head.state.first_t,
            head.min_valid_time, head.options.out_of_order_window_ms, head.max_time, outcome,
        )
        per_sample_refs = np.repeat(refs, per_series)
        head.settle_out_of_order(per_sample_refs, batch.timestamps,
                                 batch.values.view(np.uint64), outcome)
        accepted = (outcome == ak.ACCEPTED) | (outcome == ak.ACCEPTED_OUT_OF_ORDER)
        sample_refs = per_sample_refs[accepted]
        timestamps = batch.timestamps[accepted]
        values = batch.values[accepted]
        records = []
        new_refs = refs[created]
        if head.state.any_unlogged:
            again = head.series_to_log_again(refs[~created & has_samples])
            new_refs = np.concatenate((new_refs, again))
        if len(new_refs):
            blob, offsets = head.registry.keys(new_refs)
            records.append((record.SERIES, record.encode_series(new_refs, blob, offsets)))
        if len(sample_refs):
            records.append((record.SAMPLES, record.encode_samples(sample_refs, timestamps, values)))
        if records:
            try:
                position = head.wal.log(records)
            except OSError as exc:
                head.failed = f"write-ahead log write failed: {exc}"
                raise StorageError(head.failed) from exc
        head.store(per_sample_refs, batch.timestamps, batch.values, outcome)
    return _result(canon, np.where(has_samples, refs, _NOT_CREATED), created, outcome,
                   batch, per_series), position


def _result(canon: Canonical, refs: np.ndarray, created: np.ndarray, outcome: np.ndarray,
            batch: WriteBatch, per_series: np.ndarray) -> AppendResult:
    counts = np.bincount(outcome, minlength=ak.N_OUTCOMES)
    result = AppendResult(accepted=int(counts[ak.ACCEPTED] + counts[ak.ACCEPTED_OUT_OF_ORDER]),
                          duplicates=int(counts[ak.DUPLICATE]),
                          new_series=int(created.sum()))
    bad_series = np.flatnonzero(refs == -1)
    if len(bad_series):
        for i in bad_series[:MAX_ERROR_MESSAGES]:
            result.errors.append(canon.describe(int(i)))
        for i, n in zip(bad_series, per_series[bad_series]):
            reason = canon.reject_reason(int(i))
            result.rejected[reason] = result.rejected.get(reason, 0) + int(n)
    for code, reason in _REASONS.items():
        if counts[code]:
            result.rejected[reason] = result.rejected.get(reason, 0) + int(counts[code])
    failed = np.flatnonzero((outcome != ak.ACCEPTED) & (outcome != ak.ACCEPTED_OUT_OF_ORDER)
                            & (outcome != ak.DUPLICATE) & (outcome != ak.SERIES_REJECTED))
    room = MAX_ERROR_MESSAGES - len(result.errors)
    for j in failed[:max(room, 0)]:
        i = int(np.searchsorted(batch.sample_start, j, side="right") - 1)
        result.errors.append(
            f"{_SAMPLE_MESSAGES[int(outcome[j])]} for series {canon.labels_text(i)} "
            f"at timestamp {int(batch.timestamps[j])}")
    return result

