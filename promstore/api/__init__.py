"""The Prometheus HTTP API (``/api/v1/…``) as Grafana and other clients speak it.

``envelope`` holds the JSON answer shape and error types, ``params`` the parsing of
times, durations and series selectors, ``metadata`` the series and label endpoints.
"""

__all__ = ["envelope", "metadata", "params"]
