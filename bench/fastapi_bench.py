"""FastAPI under uvicorn (1 worker): what the rate-limit middleware costs a hello-world
app, next to the same app without it and with slowapi, all in the same run, driven by
the same load generator (``wrk``) on 127.0.0.1 (``make bench``; the table goes into
BENCHMARKS.md).

Variants of one app (``GET /`` returns ``{"hello": "world"}``; every route takes the
``request``, as slowapi's decorator needs it):

- ``none``: no rate limiting.
- ``flint``: ``FlintRateLimitMiddleware`` + embedded ``flint.Limiter(sync="batch")``.
- ``slowapi``: slowapi's in-memory limiter, ``Limiter(key_func=get_remote_address)``
  and ``@limiter.limit(...)`` on the route, as its documentation shows.
- ``shared``: ``FlintRateLimitMiddleware`` + ``flint.SharedLimiter`` against a Flint
  server (``flint server start``, sync=batch) on the same machine.

Three more variants, diagnostics of what the middleware's cost is made of: the same
middleware with the limiter's ``check()`` called on the event loop's thread instead
of through the executor (``flint-inline``, ``shared-inline``), and with no limiter
call at all (``flint-cached``: the first result answered again).

Every quota is far above what the run sends: nothing is ever denied. Each variant is
its own uvicorn process (all started first, then measured in turns, ROUNDS rounds, the
best round kept); throughput with ``wrk -c CONNECTIONS`` for SECONDS, latency with one
connection (``wrk -c1 --latency``, the p50). Beside them, the bare
``SharedLimiter.check()`` round trip (p50, one caller) to the same server.

Every process runs on 127.0.0.1 on a free port and is stopped by pid (SIGTERM, a
bounded wait, SIGKILL). ``python bench/fastapi_bench.py [--rounds N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

# At module level: the routes' annotations are strings (``from __future__``), which
# FastAPI resolves in this module's globals.
from fastapi import FastAPI, Request

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKEN = "bench-token"
#: A quota no run comes near: nothing is denied.
RATE = 10**9
VARIANTS = ("none", "flint", "slowapi", "shared")
#: Measured to find what the middleware's cost is made of (see ``Inline``).
DIAGNOSTICS = ("flint-inline", "shared-inline", "flint-cached")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


class Inline:
    """A limiter whose async methods call the synchronous ones on the event loop's own
    thread, with no executor hop (``cached``: ``acheck`` answers the first check's
    result again, making no limiter call at all). For measurement only: a
    ``SharedLimiter`` called this way blocks the loop during each round trip."""

    def __init__(self, inner: Any, *, cached: bool = False) -> None:
        self.inner = inner
        self.cached = cached
        self.result: Any = None

    async def acheck(self, key: str, *, cost: int = 1) -> Any:
        if self.result is not None:
            return self.result
        result = self.inner.check(key, cost=cost)
        if self.cached:
            self.result = result
        return result

    def __getattr__(self, name: str) -> Any:
        if name.startswith("a") and hasattr(self.inner, name[1:]):
            call = getattr(self.inner, name[1:])

            async def inline(*args: Any, **kwargs: Any) -> Any:
                return call(*args, **kwargs)

            return inline
        return getattr(self.inner, name)


# -- the app (imported by uvicorn: ``--factory fastapi_bench:create_app``) -----------


def create_app() -> Any:
    """The hello-world app of the variant named by ``FLINT_BENCH_VARIANT``."""
    variant = os.environ["FLINT_BENCH_VARIANT"]
    app = FastAPI()

    if variant == "slowapi":
        from slowapi import Limiter as SlowLimiter
        from slowapi import _rate_limit_exceeded_handler
        from slowapi.errors import RateLimitExceeded
        from slowapi.util import get_remote_address

        slow = SlowLimiter(key_func=get_remote_address)
        app.state.limiter = slow
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

        @app.get("/")
        @slow.limit(f"{RATE}/minute")
        async def hello_slowapi(request: Request) -> dict[str, str]:
            return {"hello": "world"}

        return app

    @app.get("/")
    async def hello(request: Request) -> dict[str, str]:
        return {"hello": "world"}

    if variant != "none":
        import flint
        from flint.fastapi import FlintRateLimitMiddleware

        limiter: Any
        if variant.startswith("flint"):
            data_dir = Path(os.environ["FLINT_BENCH_DATA_DIR"]) / variant
            limiter = flint.Limiter(data_dir, sync="batch")
        elif variant.startswith("shared"):
            limiter = flint.SharedLimiter(os.environ["FLINT_BENCH_URL"], token=TOKEN)
        else:
            raise ValueError(f"unknown variant {variant!r}")
        if variant.endswith("-inline"):
            limiter = Inline(limiter)
        elif variant.endswith("-cached"):
            limiter = Inline(limiter, cached=True)
        app.add_middleware(
            FlintRateLimitMiddleware,
            limiter=limiter,
            key="bench:{client}",
            rate=RATE,
            per="1h",
            headers="legacy",
        )
    return app


# -- processes ------------------------------------------------------------------------


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, a bounded wait, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def wait_for(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {url} within {START_TIMEOUT} s")


@contextmanager
def uvicorn(variant: str, env: dict[str, str]) -> Iterator[str]:
    """uvicorn, 1 worker, serving the variant; yields its URL."""
    from server_process import free_port

    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "fastapi_bench:create_app"]
    argv += ["--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1", "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(
        argv,
        env={**os.environ, **env, "FLINT_BENCH_VARIANT": variant},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/", process, f"uvicorn ({variant})")
        yield url
    finally:
        stop(process)


# -- the load generator ----------------------------------------------------------------

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def wrk(url: str, *, connections: int, seconds: float) -> tuple[float, float]:
    """``wrk`` against ``url``: (requests per second, p50 latency in µs)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", f"{url}/"]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    assert p50 is not None, out
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} responses were not 2xx:\n{out}")
    return rps, float(p50.group(1)) * UNITS[p50.group(2)]


def check_round_trip_us(url: str, calls: int) -> tuple[float, float]:
    """p50 of ``SharedLimiter.check()`` and of ``await acheck()`` (one caller), µs."""
    import flint

    with flint.SharedLimiter(url, token=TOKEN) as limiter:
        key = "bench:round-trip"
        limiter.limit(key, rate=RATE, per="1h")
        for _ in range(500):
            limiter.check(key)
        samples = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            limiter.check(key)
            samples.append(time.perf_counter_ns() - start)

        async def async_samples() -> list[int]:
            out = []
            for _ in range(calls):
                start = time.perf_counter_ns()
                await limiter.acheck(key)
                out.append(time.perf_counter_ns() - start)
            return out

        asynchronous = asyncio.run(async_samples())
    return statistics.median(samples) / 1000, statistics.median(asynchronous) / 1000


# -- the run --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per throughput run")
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("fastapi_bench: needs wrk (apt-get install -y wrk)")

    sys.path.insert(0, str(ROOT / "tests" / "python"))
    from server_process import running_server

    rps: dict[str, float] = {}
    p50: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=".") as tmp, ExitStack() as stack:
        server = stack.enter_context(
            running_server(Path(tmp) / "server", token=TOKEN, args=["--sync", "batch"])
        )
        env = {
            "FLINT_BENCH_DATA_DIR": str(Path(tmp) / "embedded"),
            "FLINT_BENCH_URL": server.base_url,
        }
        urls = {v: stack.enter_context(uvicorn(v, env)) for v in VARIANTS + DIAGNOSTICS}
        for url in urls.values():  # warm every app (imports, first keys, connections)
            wrk(url, connections=args.connections, seconds=1)
        for _ in range(args.rounds):
            for variant, url in urls.items():
                r, _ = wrk(url, connections=args.connections, seconds=args.seconds)
                _, p = wrk(url, connections=1, seconds=args.latency_seconds)
                rps[variant] = max(rps.get(variant, 0.0), r)
                p50[variant] = min(p50.get(variant, float("inf")), p)
        round_trip, async_round_trip = check_round_trip_us(server.base_url, 3000)

    added = p50["shared"] - p50["none"]
    rows = [
        ("no middleware (a)", f"{rps['none']:.0f} req/s", f"p50 {p50['none']:.0f} µs", "-", "-"),
        (
            "FlintRateLimitMiddleware + Limiter(sync=batch) (b)",
            f"{rps['flint']:.0f} req/s",
            f"p50 {p50['flint']:.0f} µs",
            f"(b)/(a) {rps['flint'] / rps['none']:.2f}×",
            "≥ 0.95×",
        ),
        (
            "slowapi in-memory, @limiter.limit (c)",
            f"{rps['slowapi']:.0f} req/s",
            f"p50 {p50['slowapi']:.0f} µs",
            f"(c)/(a) {rps['slowapi'] / rps['none']:.2f}×",
            "-",
        ),
        (
            "Flint (b) against slowapi (c)",
            "-",
            "-",
            f"(b)/(c) {rps['flint'] / rps['slowapi']:.2f}×",
            "> 1×",
        ),
        (
            "FlintRateLimitMiddleware + SharedLimiter (d)",
            f"{rps['shared']:.0f} req/s",
            f"p50 {p50['shared']:.0f} µs",
            f"(d)/(a) {rps['shared'] / rps['none']:.2f}×",
            "-",
        ),
        (
            "added latency with SharedLimiter, (d) p50 - (a) p50",
            f"{added:.0f} µs",
            f"check() round trip p50 (e) {round_trip:.0f} µs",
            f"{added / round_trip:.2f}×",
            "≤ 1.3×",
        ),
        (
            "await acheck() p50 (executor hop + round trip)",
            f"{async_round_trip:.0f} µs",
            f"check() p50 (e) {round_trip:.0f} µs",
            f"{async_round_trip / round_trip:.2f}×",
            "-",
        ),
    ]
    # What the cost is made of: the same middleware with the limiter called on the
    # loop's thread (no executor hop), and with no limiter call at all.
    for variant, what in (
        ("flint-cached", "middleware alone: acheck answers a stored result"),
        ("flint-inline", "middleware + Limiter, check() on the loop (no executor)"),
        ("shared-inline", "middleware + SharedLimiter, check() on the loop (no executor)"),
    ):
        rows.append(
            (
                f"diagnostic: {what}",
                f"{rps[variant]:.0f} req/s",
                f"p50 {p50[variant]:.0f} µs",
                f"/(a) {rps[variant] / rps['none']:.2f}×, p50 +{p50[variant] - p50['none']:.0f} µs",
                "-",
            )
        )
    header = ("target", "measured", "baseline / latency (same run)", "ratio", "goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print(
        f"(wrk -t1 -c{args.connections} -d{args.seconds:g}s and -c1 -d{args.latency_seconds:g}s,"
        f" best of {args.rounds} rounds; python {sys.version.split()[0]},"
        f" {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
