"""Python-side benchmarks of Flint, each next to a baseline measured in the same run.

Run by ``make bench``; the table goes into BENCHMARKS.md.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import flint


def per_call(function, calls: int, repeat: int = 5) -> float:
    """Best nanoseconds per call over ``repeat`` runs of ``calls`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


class DictLimiter:
    """The baseline: a dict lookup plus an integer compare, called as a method."""

    def __init__(self) -> None:
        self.used = {"api:user-42": 0}

    def allow(self, key: str) -> bool:
        used = self.used[key]
        if used < 10**12:
            self.used[key] = used + 1
            return True
        return False


def threads_rate(limiter: flint.Limiter, threads: int, calls: int) -> float:
    """Aggregate allowed checks per second from ``threads`` threads on distinct keys."""
    barrier = threading.Barrier(threads + 1)

    def worker(key: str) -> None:
        barrier.wait()
        for _ in range(calls):
            limiter.allow(key)

    workers = [threading.Thread(target=worker, args=(f"t:{i}",)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return threads * calls / (time.perf_counter() - start)


def main() -> None:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        run(Path(tmp))


def run(tmp: Path) -> None:
    rows = []

    baseline = DictLimiter()
    base_ns = per_call(lambda: baseline.allow("api:user-42"), 200_000)

    batch = flint.Limiter(data_dir=tmp / "batch", sync="batch")
    batch.limit("api:user-42", rate=10**12, per="1h")
    batch_ns = per_call(lambda: batch.allow("api:user-42"), 200_000)
    batch.close()
    rows.append(
        (
            "allow(), sync=batch, 1 thread",
            f"{batch_ns:.0f} ns",
            f"{base_ns:.0f} ns (dict + compare)",
            f"{batch_ns / base_ns:.1f}×",
            "≤ 400 ns",
        )
    )

    always = flint.Limiter(data_dir=tmp / "always", sync="always")
    for i in range(4):
        always.limit(f"t:{i}", rate=10**12, per="1h")
    one = threads_rate(always, 1, 2000)
    four = threads_rate(always, 4, 1000)
    rows.append(
        (
            "allow(), sync=always, 4 threads (aggregate)",
            f"{four:.0f}/s",
            f"{one:.0f}/s (1 thread)",
            f"{four / one:.1f}×",
            "≥ 3 × one thread",
        )
    )

    always.limit("full", rate=1, per="1h")
    always.allow("full")
    denial_ns = per_call(lambda: always.allow("full"), 100_000)
    always.close()
    rows.append(
        (
            "denial, sync=always",
            f"{denial_ns:.0f} ns",
            f"{base_ns:.0f} ns (dict + compare)",
            f"{denial_ns / base_ns:.1f}×",
            "≤ 500 ns",
        )
    )

    events_dir = tmp / "events"
    with flint.Limiter(data_dir=events_dir, sync="batch") as limiter:
        limiter.limit("k", rate=10**12, per="1d")
        for _ in range(100_000 - 1):
            limiter.allow("k")
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        limiter = flint.Limiter(data_dir=events_dir)
        best = min(best, time.perf_counter() - start)
        limiter.close()
    rows.append(
        ("open a directory of 100,000 logged events", f"{best * 1e3:.1f} ms", "-", "-", "≤ 20 ms")
    )

    print()
    print("| target | measured | baseline (same run) | ratio | goal |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
