"""Shared fixtures: a fresh data directory, a manual clock and a limiter on both; a
real Flint server (the installed ``flint`` command) for shared mode, and
``any_limiter``, the same tests against ``Limiter`` and ``SharedLimiter``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import pytest
from server_process import Server, start_server

import flint

START = 1_700_000_000.0
TOKEN = "test-token-0123456789"

AnyLimiter = Union[flint.Limiter, flint.SharedLimiter]

# The fields of a status dict and of a check result, in Python and over HTTP.
STATUS_FIELDS = {
    "key",
    "rate",
    "burst",
    "per",
    "per_ms",
    "algorithm",
    "mode",
    "template",
    "remaining",
    "reset_at",
    "allowed",
    "denied",
    "allowed_cost",
    "denied_cost",
    "shadow_denied",
    "last_seen",
}
RESULT_FIELDS = {
    "key",
    "allowed",
    "remaining",
    "reset_at",
    "retry_after",
    "limit",
    "algorithm",
    "cost",
    "shadow_denied",
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / ".flint"


@pytest.fixture
def clock() -> flint.ManualClock:
    return flint.ManualClock(start=START)


@pytest.fixture
def limiter(data_dir: Path, clock: flint.ManualClock) -> Iterator[flint.Limiter]:
    with flint.Limiter(data_dir=data_dir, clock=clock) as limiter:
        yield limiter


@pytest.fixture(scope="session")
def flint_script() -> Path:
    """The installed ``flint`` console script of the running environment."""
    return Path(sys.executable).parent / "flint"


# -- shared mode: a real server (started and stopped by server_process) -----------


@pytest.fixture(scope="session")
def flint_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the session (starting one per test would cost more than the
    tests); ``any_limiter`` removes every limit before each test."""
    server = start_server(tmp_path_factory.mktemp("server") / ".flint", token=TOKEN)
    yield server
    stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr


@pytest.fixture
def server_of_my_own(tmp_path: Path) -> Iterator[Server]:
    """A server for a test that stops or kills it."""
    server = start_server(tmp_path / ".flint", token=TOKEN)
    yield server
    server.stop()


def shared_limiter(server: Server, **kwargs: Any) -> flint.SharedLimiter:
    return flint.SharedLimiter(server.base_url, token=server.token, **kwargs)


@pytest.fixture(params=["embedded", "shared"])
def any_limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyLimiter]:
    """``flint.Limiter`` on a fresh directory, then ``flint.SharedLimiter`` on the
    session's server, emptied of every limit first. Both on the real clock: use long
    periods ("1h") so that nothing refills during a test."""
    if request.param == "embedded":
        with flint.Limiter(data_dir=tmp_path / ".flint") as embedded:
            yield embedded
        return
    server: Server = request.getfixturevalue("flint_server")
    with shared_limiter(server) as shared:
        # Templates first: removing one removes the keys made from it.
        for kind in ("templates", "keys"):
            for status in shared.list(kind=kind):
                shared.remove(status["key"])
        yield shared
