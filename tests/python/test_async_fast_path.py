"""An embedded limiter with sync="batch" decides async checks in the event loop's
thread (no executor hop) when the engine's lock is free; sync="always" uses the
executor, where the wait for the disk belongs."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

import flint


class RefusingExecutor(concurrent.futures.ThreadPoolExecutor):
    """An executor that records and refuses every call handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.calls += 1
        raise RuntimeError("no executor hop expected")


def test_a_batch_check_is_decided_without_an_executor_thread(tmp_path: Path) -> None:
    with flint.Limiter(tmp_path / "d", sync="batch") as limiter:
        limiter.limit("k", rate=2, per="1h")

        async def run() -> list[flint.CheckResult]:
            executor = RefusingExecutor()
            asyncio.get_running_loop().set_default_executor(executor)
            results = [await limiter.acheck("k") for _ in range(3)]
            assert executor.calls == 0
            return results

        results = asyncio.run(run())
        assert [r.allowed for r in results] == [True, True, False]
        assert limiter.status("k")["allowed"] == 2  # type: ignore[index]


def test_an_always_check_waits_for_the_disk_on_an_executor_thread(tmp_path: Path) -> None:
    with flint.Limiter(tmp_path / "d", sync="always") as limiter:
        limiter.limit("k", rate=2, per="1h")

        async def run() -> None:
            executor = RefusingExecutor()
            asyncio.get_running_loop().set_default_executor(executor)
            with pytest.raises(RuntimeError, match="no executor hop expected"):
                await limiter.acheck("k")
            assert executor.calls == 1

        asyncio.run(run())
        assert limiter.status("k")["allowed"] == 0  # type: ignore[index]


def test_check_nowait_decides_like_check(tmp_path: Path) -> None:
    with flint.Limiter(tmp_path / "d", sync="batch") as limiter:
        limiter.limit("k", rate=1, per="1h")
        first = limiter.check_nowait("k")
        second = limiter.check_nowait("k")
        assert first is not None and first.allowed
        assert second is not None and not second.allowed
        with pytest.raises(flint.LimitNotFound):
            limiter.check_nowait("unknown")
