"""Load generator and capacity benchmarks for promstore and its peers (public HTTP only)."""
