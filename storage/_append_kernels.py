"""numba kernel that applies Prometheus's per-sample append rules to a batch."""

from __future__ import annotations

import numpy as np
from numba import njit

# Per-sample outcome codes (see storage.head_append for their meaning and messages).
ACCEPTED = 0
DUPLICATE = 1
OUT_OF_ORDER = 2
DUPLICATE_TIMESTAMP = 3
OUT_OF_BOUNDS = 4
SERIES_REJECTED = 5
TOO_MANY_SERIES = 6
ACCEPTED_OUT_OF_ORDER = 7  # older than the series' newest sample, inside the window
N_OUTCOMES = 8


@njit(cache=True, nogil=True)
def check_samples(
    refs, sample_start, timestamps, value_bits,
    last_t, last_v, first_t, min_valid_t, ooo_window, head_max_t, outcome,
) -> int:
    """Decide each sample's fate and advance the series' state for the accepted ones.

    ``refs[i]`` is series i's ref (-1 invalid labels, -2 over the series limit). A sample
    newer than its series' last one is accepted; one at the same timestamp is a silent
    duplicate when its bits are equal and an error otherwise; an older one is accepted
    only within ``ooo_window`` ms of the head's newest sample (a retried out-of-order
    sample is reported as ``ACCEPTED_OUT_OF_ORDER``; the head then checks it against what it
already holds at that timestamp). Timestamps below
    ``min_valid_t`` are out of bounds; it must exceed INT64_MIN, which marks "no sample
    yet" in ``last_t``. Returns the new head max time.
    """
    for i in range(len(refs)):
        r = refs[i]
        for j in range(sample_start[i], sample_start[i + 1]):
            if r < 0:
                outcome[j] = SERIES_REJECTED if r == -1 else TOO_MANY_SERIES
                continue
            t = timestamps[j]
            if t < min_valid_t:
                outcome[j] = OUT_OF_BOUNDS
                continue
            lt = last_t[r]
            if t > lt:
                last_t[r] = t
                last_v[r] = value_bits[j]
                if t < first_t[r]:
                    first_t[r] = t
                if t > head_max_t:
                    head_max_t = t
                outcome[j] = ACCEPTED
            elif t == lt:
                outcome[j] = DUPLICATE if value_bits[j] == last_v[r] else DUPLICATE_TIMESTAMP
            elif ooo_window > 0 and np.uint64(head_max_t) - np.uint64(t) <= np.uint64(ooo_window):
                # unsigned difference: head_max_t >= t here, and int64 subtraction may overflow
                if t < first_t[r]:
                    first_t[r] = t
                outcome[j] = ACCEPTED_OUT_OF_ORDER
            else:
                outcome[j] = OUT_OF_ORDER
    return head_max_t
