"""Shared fixtures."""

from __future__ import annotations

import pytest

from tests.helpers import ServerProcess


@pytest.fixture
def start_server(tmp_path):
    """Start ``promstore serve`` processes for one test; each is killed at teardown.

    ``start_server(data_dir=None, *flags, env=None)`` returns a ready ``ServerProcess``;
    without ``data_dir`` it gets ``tmp_path / "data"``.
    """
    started: list[ServerProcess] = []

    def start(data_dir=None, *args: str, env=None, **kwargs) -> ServerProcess:
        server = ServerProcess(data_dir if data_dir is not None else tmp_path / "data", *args,
                               env=env, log_path=tmp_path / f"server-{len(started)}.log",
                               **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()
