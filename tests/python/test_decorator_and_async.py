"""The rate_limit decorator and the async methods."""

from __future__ import annotations

import asyncio

import pytest

import flint


def test_rate_limit_on_a_function(limiter: flint.Limiter) -> None:
    calls = []

    @limiter.rate_limit("email:send", rate=2, per="1m")
    def send_email(to: str) -> str:
        """Send one email."""
        calls.append(to)
        return f"sent to {to}"

    assert send_email.__name__ == "send_email"
    assert send_email.__doc__ == "Send one email."
    assert send_email("a") == "sent to a"
    assert send_email(to="b") == "sent to b"
    with pytest.raises(flint.RateLimitExceeded) as caught:
        send_email("c")
    assert calls == ["a", "b"], "the function does not run over the limit"
    error = caught.value
    assert error.key == "email:send"
    assert error.remaining == 0
    assert error.retry_after > 0
    assert error.reset_at > 0
    assert limiter.status("email:send")["rate"] == 2  # type: ignore[index]


def test_rate_limit_on_a_method_with_a_cost(limiter: flint.Limiter) -> None:
    class Mailer:
        @limiter.rate_limit("bulk", rate=10, per="1h", cost=4)
        def send(self) -> int:
            return 1

    mailer = Mailer()
    assert mailer.send() + mailer.send() == 2
    with pytest.raises(flint.RateLimitExceeded):
        mailer.send()
    assert limiter.status("bulk")["remaining"] == 2  # type: ignore[index]


async def test_rate_limit_on_an_async_function(limiter: flint.Limiter) -> None:
    @limiter.rate_limit("async:k", rate=1, per="1m", algorithm="sliding_window_log")
    async def handler() -> str:
        """Handle."""
        await asyncio.sleep(0)
        return "ok"

    assert asyncio.iscoroutinefunction(handler)
    assert handler.__name__ == "handler" and handler.__doc__ == "Handle."
    assert await handler() == "ok"
    with pytest.raises(flint.RateLimitExceeded):
        await handler()


async def test_every_async_method(limiter: flint.Limiter) -> None:
    assert await limiter.alimit("a", rate=3, per="1m") == "created"
    assert await limiter.aallow("a") is True
    result = await limiter.acheck("a", cost=2)
    assert result.remaining == 0
    await limiter.alimit("b", rate=3, per="1m")
    assert await limiter.aallow_all(["b"]) is True
    assert (await limiter.acheck_all(["a", "b"]))["denied_key"] == "a"
    assert (await limiter.astatus("a"))["allowed"] == 2  # type: ignore[index]
    assert [s["key"] for s in await limiter.alist()] == ["a", "b"]
    assert len(await limiter.ahistory("a")) == 3
    assert (await limiter.atop())[0]["key"] == "a"
    await limiter.areset("a")
    assert (await limiter.astatus("a"))["remaining"] == 3  # type: ignore[index]
    await limiter.aflush()
    assert (await limiter.acompact())["keys"] == 2
    assert (await limiter.adoctor())["ok"] is True
    await limiter.aremove("b")
    assert await limiter.astatus("b") is None
    with pytest.raises(flint.LimitNotFound):
        await limiter.acheck("b")


async def test_async_calls_do_not_block_the_event_loop(limiter: flint.Limiter) -> None:
    limiter.limit("k", rate=1000, per="1s")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(20):
            ticks += 1
            await asyncio.sleep(0)

    checks = [limiter.aallow("k") for _ in range(50)]
    results = await asyncio.gather(ticker(), *checks)
    assert all(results[1:])
    assert ticks == 20
