"""WriteBatch: the decoded form of one write request, handed from a wire decoder to the head.

A batch is columnar: no Python object per series, label or sample. Label names and
values are byte ranges into ``buf`` (the decompressed request body, or any byte
buffer), so decoding never copies or decodes strings.

Contract:
- Series ``i`` owns labels ``label_start[i]:label_start[i+1]`` and samples
  ``sample_start[i]:sample_start[i+1]``. ``label_start`` and ``sample_start`` have
  ``n_series + 1`` entries, start at 0 and never decrease.
- Labels are as sent: they may be unsorted, repeated, empty or invalid. The head
  validates and canonicalises them (see ``storage.labels``).
- ``values`` are float64 whose bit patterns are kept exactly (stale markers, NaN
  payloads); nothing may do arithmetic on them before they are stored.
- Timestamps are milliseconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["WriteBatch"]


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """One request's series, labels and float samples as flat numpy arrays."""

    buf: np.ndarray  # uint8: bytes that label offsets point into
    label_start: np.ndarray  # int64 [n_series + 1]
    name_off: np.ndarray  # int64 [n_labels]
    name_len: np.ndarray  # int64 [n_labels]
    value_off: np.ndarray  # int64 [n_labels]
    value_len: np.ndarray  # int64 [n_labels]
    sample_start: np.ndarray  # int64 [n_series + 1]
    timestamps: np.ndarray  # int64 [n_samples]
    values: np.ndarray  # float64 [n_samples]
    # Parts of the request the head does not store yet, counted so they can be reported.
    n_histograms: int = 0
    n_exemplars: int = 0
    n_metadata: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Kernels read label bytes through the buffer's address.
        if not self.buf.flags.c_contiguous:
            object.__setattr__(self, "buf", np.ascontiguousarray(self.buf))

    @property
    def n_series(self) -> int:
        return len(self.label_start) - 1

    @property
    def n_samples(self) -> int:
        return len(self.timestamps)

    @staticmethod
    def from_series(series: list[tuple[dict[str, str] | list[tuple[str, str]],
                                       list[tuple[int, float]]]]) -> WriteBatch:
        """Build a batch from Python objects; for tests, tools and replay, not the hot path."""
        chunks: list[bytes] = []
        pos = 0
        label_start = [0]
        sample_start = [0]
        name_off: list[int] = []
        name_len: list[int] = []
        value_off: list[int] = []
        value_len: list[int] = []
        ts: list[int] = []
        vs: list[float] = []
        for labels, samples in series:
            items = labels.items() if isinstance(labels, dict) else labels
            for name, value in items:
                nb, vb = name.encode(), value.encode()
                name_off.append(pos)
                name_len.append(len(nb))
                chunks.append(nb)
                pos += len(nb)
                value_off.append(pos)
                value_len.append(len(vb))
                chunks.append(vb)
                pos += len(vb)
            label_start.append(len(name_off))
            for t, v in samples:
                ts.append(t)
                vs.append(v)
            sample_start.append(len(ts))
        return WriteBatch(
            buf=np.frombuffer(b"".join(chunks), dtype=np.uint8),
            label_start=np.asarray(label_start, dtype=np.int64),
            name_off=np.asarray(name_off, dtype=np.int64),
            name_len=np.asarray(name_len, dtype=np.int64),
            value_off=np.asarray(value_off, dtype=np.int64),
            value_len=np.asarray(value_len, dtype=np.int64),
            sample_start=np.asarray(sample_start, dtype=np.int64),
            timestamps=np.asarray(ts, dtype=np.int64),
            values=np.asarray(vs, dtype=np.float64),
        )
