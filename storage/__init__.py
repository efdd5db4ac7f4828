"""The storage engine: WAL, head, chunks, blocks, index and querier.

Knows nothing about HTTP or PromQL. Depends on numpy, numba and zstandard only.
"""
