"""Shared-mode benchmarks through the Python client, each next to a baseline measured
in the same run (``make bench``; the table goes into BENCHMARKS.md).

- ``SharedLimiter.check()`` p50 against ``GET /v1/health`` p50 through the same client
  (``SharedLimiter.health()``), one caller, ``sync=batch``.
- ``sync=always``: checks per second from 4 client processes against one.

Each server is the installed ``flint`` console script on 127.0.0.1, stopped by pid.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import flint

TOKEN = "bench-token"
FLINT = Path(sys.executable).parent / "flint"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(sync: str) -> Iterator[str]:
    """A server on a fresh data directory; yields its URL."""
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        port = free_port()
        process = subprocess.Popen(
            [
                str(FLINT),
                "--data-dir",
                str(Path(tmp) / ".flint"),
                "server",
                "start",
                "--bind",
                f"127.0.0.1:{port}",
                "--token",
                TOKEN,
                "--sync",
                sync,
            ],
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            client = flint.SharedLimiter(url, token=TOKEN, timeout=5.0)
            for _ in range(200):
                try:
                    client.health()
                    break
                except flint.FlintConnectionError:
                    time.sleep(0.05)
            client.limit("bench", rate=10**12, per="365d")
            client.close()
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def p50_us(call, calls: int) -> float:
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def checks_for(url: str, seconds: float, out: multiprocessing.Queue) -> None:
    limiter = flint.SharedLimiter(url, token=TOKEN)
    deadline = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < deadline:
        limiter.check("bench")
        done += 1
    out.put(done)


def processes_rate(url: str, processes: int, seconds: float) -> float:
    out: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=checks_for, args=(url, seconds, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(out.get(timeout=seconds + 30) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    return total / seconds


def main() -> None:
    rows = []
    with server("batch") as url:
        limiter = flint.SharedLimiter(url, token=TOKEN)
        for _ in range(500):  # warm the connection and the server
            limiter.check("bench")
            limiter.health()
        check = health = float("inf")
        for _ in range(3):
            health = min(health, p50_us(limiter.health, 3000))
            check = min(check, p50_us(lambda: limiter.check("bench"), 3000))
        limiter.close()
        # The same request through a pure-Python client, for the choice of client.
        try:
            import httpx
        except ImportError:
            httpx_check = None
        else:
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}) as web:
                body = {"key": "bench", "cost": 1}
                httpx_check = min(
                    p50_us(lambda: web.post("/v1/check", json=body).json(), 3000) for _ in range(3)
                )
    if httpx_check is not None:
        rows.append(
            (
                "SharedLimiter.check() p50 (Rust client, ureq)",
                f"{check:.1f} µs",
                f"httpx.Client POST /v1/check p50 {httpx_check:.1f} µs",
                f"{check / httpx_check:.2f}×",
                "(choice of client)",
            )
        )
    rows.append(
        (
            "SharedLimiter.check() p50, sync=batch, 1 caller",
            f"{check:.1f} µs",
            f"health() p50 {health:.1f} µs",
            f"{check / health:.2f}×",
            "≤ 1.3× and < 120 µs",
        )
    )
    with server("always") as url:
        one = processes_rate(url, 1, 3.0)
        four = processes_rate(url, 4, 3.0)
    rows.append(
        (
            "SharedLimiter.check() from 4 processes, sync=always",
            f"{four:.0f}/s",
            f"1 process {one:.0f}/s",
            f"{four / one:.1f}×",
            "≥ 5×",
        )
    )
    header = ("target", "measured", "baseline (same run)", "ratio", "goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
