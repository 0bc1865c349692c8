"""End to end: uvicorn with two worker processes, each with ``FlintRateLimitMiddleware``
over a ``flint.SharedLimiter`` of one Flint server, driven by concurrent clients. The
two workers share one quota exactly: of N requests, ``rate`` get 200 and the rest 429.

Everything is a real process on 127.0.0.1 on ports chosen free: the server (started
and stopped by ``server_process``), uvicorn (started here, stopped by pid: SIGTERM, a
bounded wait, then SIGKILL, its workers too). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from server_process import Server, free_port, running_server

import flint

HERE = Path(__file__).resolve().parent
TOKEN = "e2e-token-0123456789"
RATE = 50
REQUESTS = 200
CONCURRENCY = 8
WORKERS = 2
#: How long uvicorn and its workers may take to start, and to stop after SIGTERM.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


@dataclass
class Uvicorn:
    process: subprocess.Popen[bytes]
    port: int
    worker_pids: set[int]
    stderr_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _is_worker(pid: int) -> bool:
    """Whether ``pid`` is still one of uvicorn's worker processes (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmdline or b"uvicorn" in cmdline


def _stop(uvicorn: Uvicorn) -> None:
    """SIGTERM to uvicorn's supervisor by pid, a bounded wait, then SIGKILL; then any
    worker that outlived it, by pid."""
    process = uvicorn.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in uvicorn.worker_pids:
        while _is_worker(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_worker(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _start(server: Server, ready_dir: Path, attempts: int = 3) -> Uvicorn:
    """uvicorn with WORKERS workers on a free port; returns once every worker has run
    its lifespan startup (written its pid into ``ready_dir``)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLINT_")},
        "FLINT_E2E_URL": server.base_url,
        "FLINT_E2E_TOKEN": server.token or "",
        "FLINT_E2E_KEY": "e2e:{client}",
        "FLINT_E2E_RATE": str(RATE),
        "FLINT_E2E_PER": "1d",
        "FLINT_E2E_READY_DIR": str(ready_dir),
    }
    failure = ""
    for _ in range(attempts):
        for stale in ready_dir.iterdir():
            stale.unlink()
        port = free_port()
        fd, name = tempfile.mkstemp(prefix="flint-uvicorn-", suffix=".stderr")
        os.close(fd)
        stderr_path = Path(name)
        argv = [sys.executable, "-m", "uvicorn", "fastapi_e2e_app:app"]
        argv += ["--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(WORKERS), "--log-level", "warning", "--no-access-log"]
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        uvicorn = Uvicorn(process, port, set(), stderr_path)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            uvicorn.worker_pids = {int(p.name) for p in ready_dir.iterdir()}
            if len(uvicorn.worker_pids) >= WORKERS:
                return uvicorn
            time.sleep(0.05)
        uvicorn.worker_pids = {int(p.name) for p in ready_dir.iterdir()}
        _stop(uvicorn)
        failure = uvicorn.stderr()
        if "address already in use" not in failure.lower():
            break  # not a lost race for the port: retrying would not help
    raise AssertionError(f"uvicorn did not start {WORKERS} workers; stderr:\n{failure}")


@contextmanager
def running_uvicorn(server: Server, ready_dir: Path) -> Iterator[Uvicorn]:
    uvicorn = _start(server, ready_dir)
    try:
        yield uvicorn
    finally:
        _stop(uvicorn)


async def _drive(base_url: str) -> list[httpx.Response]:
    """REQUESTS GETs from CONCURRENCY tasks, each on a new connection (no keep-alive),
    so that the kernel hands connections to both workers."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=0)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10.0) as client:

        async def task() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                responses.append(await client.get("/"))

        await asyncio.wait_for(asyncio.gather(*(task() for _ in range(CONCURRENCY))), 60.0)
    return responses


def test_two_uvicorn_workers_share_one_quota_exactly(tmp_path: Path) -> None:
    ready_dir = tmp_path / "ready"
    ready_dir.mkdir()
    with running_server(tmp_path / ".flint", token=TOKEN) as server:
        with running_uvicorn(server, ready_dir) as uvicorn:
            responses = asyncio.run(_drive(uvicorn.base_url))

            statuses = Counter(r.status_code for r in responses)
            assert statuses == {200: RATE, 429: REQUESTS - RATE}, (statuses, uvicorn.stderr())

            # Both worker processes answered, and only they did.
            answered_by = Counter(int(r.headers["x-worker-pid"]) for r in responses)
            assert set(answered_by) == uvicorn.worker_pids, (answered_by, uvicorn.worker_pids)
            assert len(answered_by) == WORKERS
            for r in responses:
                if r.status_code == 200:
                    assert r.json()["pid"] == int(r.headers["x-worker-pid"])
                else:
                    assert r.json() == {"detail": "rate limit exceeded"}
                    assert int(r.headers["retry-after"]) >= 1
                    assert r.headers["x-ratelimit-limit"] == str(RATE)
                    assert r.headers["x-ratelimit-remaining"] == "0"

            # The server counted the same: one key, RATE allowed, the rest denied.
            with flint.SharedLimiter(server.base_url, token=TOKEN) as shared:
                status = shared.status("e2e:127.0.0.1")
            assert status is not None
            assert (status["allowed"], status["denied"]) == (RATE, REQUESTS - RATE)

    assert uvicorn.process.returncode is not None
    for pid in uvicorn.worker_pids:
        assert not _is_worker(pid), f"worker {pid} outlived the test"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
