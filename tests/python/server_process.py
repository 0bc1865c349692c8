"""Run ``flint server start`` as a child process for the shared-mode tests.

The server is the installed ``flint`` console script (the Rust CLI inside the native
module), bound to 127.0.0.1 on a free port. Starting waits for ``GET /v1/health`` in a
bounded loop; stopping goes by pid: SIGTERM, a bounded wait, then SIGKILL. Every wait
here is bounded, so a hung server fails a test instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: The ``flint`` console script installed beside the running interpreter.
FLINT = Path(sys.executable).parent / "flint"

#: How long a server may take to answer its first health check.
HEALTH_TIMEOUT = 10.0
#: How long a server may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (the kernel's pick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound now (as the server binds: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def has_ipv6_loopback() -> bool:
    """Whether this machine can listen on ``[::1]``."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass
class Stopped:
    """How a server process ended."""

    returncode: int
    stderr: str


@dataclass
class Server:
    """A running ``flint server start`` child process."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    token: str | None
    data_dir: Path
    stderr_path: Path
    stopped: Stopped | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, *, timeout: float = 10.0, auth: bool = True) -> httpx.Client:
        """An httpx client for this server, carrying the token unless ``auth`` is off."""
        return httpx.Client(
            base_url=self.base_url, headers=self.headers if auth else {}, timeout=timeout
        )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> Stopped:
        """SIGTERM by pid, wait at most ``timeout``, then SIGKILL; the exit and stderr."""
        if self.stopped is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=timeout)
            self.stopped = Stopped(self.process.returncode, self.stderr())
        return self.stopped

    def kill(self) -> Stopped:
        """SIGKILL by pid (a crash: nothing is flushed or released by the server)."""
        if self.stopped is None:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)
            self.stopped = Stopped(self.process.returncode, self.stderr())
        return self.stopped

    def _signal(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerFailedToStart(RuntimeError):
    """The server exited, or never answered ``GET /v1/health`` in time."""


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a server: this one (without a stray token), plus ``env``."""
    merged = {k: v for k, v in os.environ.items() if k != "FLINT_SERVER_TOKEN"}
    merged["PATH"] = f"{FLINT.parent}{os.pathsep}{merged.get('PATH', '')}"
    merged.update(env or {})
    return merged


def wait_healthy(
    base_url: str, process: subprocess.Popen[bytes], timeout: float = HEALTH_TIMEOUT
) -> None:
    """Polls ``GET /v1/health`` until it answers 200; fails if the process exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailedToStart(f"the server exited with {process.returncode}")
        try:
            response = httpx.get(f"{base_url}/v1/health", timeout=1.0)
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.HTTPError as error:
            last = error
        time.sleep(0.02)
    raise ServerFailedToStart(f"no health answer within {timeout} s (last: {last!r})")


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stderr_path: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    """Starts ``argv`` with stderr going to a file (a pipe could fill up and block)."""
    if stderr_path is None:
        fd, name = tempfile.mkstemp(prefix="flint-server-", suffix=".stderr")
        os.close(fd)
        stderr_path = Path(name)
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=server_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    return process, stderr_path


def start_server(
    data_dir: Path,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    args: Sequence[str] = (),
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stderr_path: Path | None = None,
    attempts: int = 3,
) -> Server:
    """Starts ``flint --data-dir D server start --bind HOST:PORT [--token T] ARGS``.

    Waits until it answers ``GET /v1/health``. With no ``port``, a free one is
    picked; if another process takes it first, the start is retried on a new port.
    """
    for attempt in range(attempts):
        chosen = port if port is not None else free_port(host)
        argv = [str(FLINT), "--data-dir", str(data_dir), "server", "start"]
        argv += ["--bind", f"{url_host(host)}:{chosen}"]
        if token is not None:
            argv += ["--token", token]
        argv += list(args)
        process, path = spawn(argv, cwd=cwd, env=env, stderr_path=stderr_path)
        server = Server(process, host, chosen, token, Path(data_dir), path)
        try:
            wait_healthy(server.base_url, process)
            return server
        except ServerFailedToStart as error:
            stopped = server.stop()
            lost_port = "cannot listen" in stopped.stderr and port is None
            if lost_port and attempt + 1 < attempts:
                continue
            raise ServerFailedToStart(f"{error}; stderr:\n{stopped.stderr}") from None
    raise AssertionError("unreachable")


@contextmanager
def running_server(data_dir: Path, **kwargs: object) -> Iterator[Server]:
    """A started server, stopped by pid when the block ends (however it ends)."""
    server = start_server(data_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def run_flint(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Runs ``flint ARGS`` to completion (for commands that must exit by themselves)."""
    return subprocess.run(
        [str(FLINT), *args],
        cwd=cwd,
        env=server_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def raw_exchange(host: str, port: int, data: bytes, *, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Sends ``data`` on a new connection and reads until the server closes it or
    ``timeout`` passes: (what was read, whether the server closed the connection)."""
    received = b""
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return received, True
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return received, False
            except ConnectionResetError:
                return received, True
            if not chunk:
                return received, True
            received += chunk
    return received, False
