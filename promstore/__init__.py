"""promstore: long-term storage for Prometheus (remote_write in, PromQL out)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
