"""Threads sharing one limiter: the engine releases the GIL and never over-admits."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import flint

from conftest import START


@pytest.mark.parametrize(
    "algorithm", ["token_bucket", "sliding_window_log", "fixed_window_counter"]
)
@pytest.mark.parametrize("sync", ["always", "batch"])
def test_threads_never_exceed_the_rate(data_dir: Path, algorithm: str, sync: str) -> None:
    clock = flint.ManualClock(start=START)
    with flint.Limiter(data_dir=data_dir, sync=sync, clock=clock) as limiter:
        limiter.limit("hot", rate=200, per="1h", algorithm=algorithm)
        barrier = threading.Barrier(8)

        def hammer() -> int:
            barrier.wait()
            return sum(limiter.allow("hot") for _ in range(100))

        with ThreadPoolExecutor(max_workers=8) as pool:
            allowed = sum(pool.map(lambda _: hammer(), range(8)))
        assert allowed == 200
        status = limiter.status("hot")
        assert status is not None
        assert (status["allowed"], status["denied"]) == (200, 600)
