"""Shared fixtures: a fresh data directory, a manual clock and a limiter on both; a
real Flint server (the installed ``flint`` command) for shared mode, and
``any_limiter``, the same tests against ``Limiter`` and ``SharedLimiter``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pytest

import flint

START = 1_700_000_000.0
TOKEN = "test-token-0123456789"

AnyLimiter = Union[flint.Limiter, flint.SharedLimiter]


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


# -- shared mode: a real server -------------------------------------------------------


@dataclass
class RunningServer:
    """A ``flint server start`` child process on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    url: str
    token: str | None
    data_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, wait: float = 10.0) -> int:
        """Sends ``sig`` to the server (by its pid), then SIGKILL if it is still
        running after ``wait`` seconds; returns its exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                return self.process.wait(wait)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(wait)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def start_server(
    script: Path, data_dir: Path, token: str | None = TOKEN, *extra: str
) -> RunningServer:
    """Starts ``flint --data-dir D server start --bind 127.0.0.1:PORT`` and waits (at
    most 10 s) until ``GET /v1/health`` answers. A port taken between choosing and
    binding it is retried with another, twice."""
    for _ in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = data_dir.parent / f"server-{port}.log"
        args = [str(script), "--data-dir", str(data_dir), "server", "start"]
        args += ["--bind", f"127.0.0.1:{port}", *extra]
        if token is not None:
            args += ["--token", token]
        env = {k: v for k, v in os.environ.items() if k != "FLINT_SERVER_TOKEN"}
        with log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        server = RunningServer(process, url, token, data_dir, log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if healthy(url):
                return server
            time.sleep(0.05)
        server.stop(wait=5)
        if "cannot listen" not in server.output():
            raise RuntimeError(f"the Flint server did not start:\n{server.output()}")
    raise RuntimeError("no free port for the Flint server after 3 tries")


@pytest.fixture(scope="session")
def flint_server(
    flint_script: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server for the session (starting one per test would cost more than the
    tests); ``any_limiter`` removes every limit before each test."""
    server = start_server(flint_script, tmp_path_factory.mktemp("server") / ".flint")
    yield server
    assert server.stop() == 0, server.output()


@pytest.fixture
def server_of_my_own(flint_script: Path, tmp_path: Path) -> Iterator[RunningServer]:
    """A server for a test that stops or kills it."""
    server = start_server(flint_script, tmp_path / ".flint")
    yield server
    server.stop()


def shared_limiter(server: RunningServer, **kwargs: Any) -> flint.SharedLimiter:
    return flint.SharedLimiter(server.url, token=server.token, **kwargs)


@pytest.fixture(params=["embedded", "shared"])
def any_limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyLimiter]:
    """``flint.Limiter`` on a fresh directory, then ``flint.SharedLimiter`` on the
    session's server, emptied of every limit first. Both on the real clock: use long
    periods ("1h") so that nothing refills during a test."""
    if request.param == "embedded":
        with flint.Limiter(data_dir=tmp_path / ".flint") as embedded:
            yield embedded
        return
    server: RunningServer = request.getfixturevalue("flint_server")
    with shared_limiter(server) as shared:
        for status in shared.list():
            shared.remove(status["key"])
        yield shared
