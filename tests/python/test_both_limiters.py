"""The same behaviour from flint.Limiter (embedded) and flint.SharedLimiter (a real
server): every test runs against both, through the ``any_limiter`` fixture.

Both run on the real clock, so limits use long periods ("1h") and the tests look only
at what cannot drift in a second. Errors raised by the server carry its URL after the
engine's message; the tests compare the message's text up to there.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time

import pytest

import flint

from conftest import RESULT_FIELDS, STATUS_FIELDS, AnyLimiter

ALGORITHMS = ["token_bucket", "sliding_window_log", "fixed_window_counter"]


def shared(limiter: AnyLimiter) -> bool:
    return isinstance(limiter, flint.SharedLimiter)


def says(error: BaseException, text: str, limiter: AnyLimiter) -> None:
    """The message is ``text`` (embedded) or ``text`` with the server's URL after it."""
    message = str(error)
    if shared(limiter):
        assert isinstance(limiter, flint.SharedLimiter)
        assert message.startswith(text), message
        assert limiter.url in message, message
    else:
        assert message == text


# -- limit, allow, check ------------------------------------------------------------


def test_limit_reports_created_unchanged_updated(any_limiter: AnyLimiter) -> None:
    assert any_limiter.limit("k", rate=10, per="1h") == "created"
    assert any_limiter.limit("k", rate=10, per="1h") == "unchanged"
    assert any_limiter.limit("k", rate=10, per=3600) == "unchanged"
    assert any_limiter.limit("k", rate=10, per=3600.0) == "unchanged"
    assert any_limiter.limit("k", rate=10, per=datetime.timedelta(hours=1)) == "unchanged"
    assert any_limiter.limit("k", rate=20, per="1h") == "updated"
    status = any_limiter.status("k")
    assert status is not None
    assert (status["rate"], status["per"], status["per_ms"]) == (20, "1h", 3_600_000)


# -- burst ---------------------------------------------------------------------------


def test_a_burst_is_the_capacity_of_a_token_bucket(any_limiter: AnyLimiter) -> None:
    assert any_limiter.limit("b", rate=10, per="1h", burst=50) == "created"
    status = any_limiter.status("b")
    assert status is not None and set(status) == STATUS_FIELDS
    assert (status["rate"], status["burst"], status["remaining"]) == (10, 50, 50)
    first = any_limiter.check("b", cost=45)
    assert (first.allowed, first.remaining, first.limit) == (True, 5, 50)
    assert not any_limiter.check("b", cost=6).allowed
    # Refilled at the rate: 10 per hour, one every 360 s.
    denied = any_limiter.peek("b", cost=6)
    assert 359 < denied.retry_after <= 360
    # A refund is capped at the burst.
    any_limiter.refund("b", cost=50)
    assert any_limiter.status("b")["remaining"] == 50  # type: ignore[index]
    # Without a burst (or with burst=None, or burst == rate) the capacity is the rate.
    any_limiter.limit("plain", rate=10, per="1h")
    assert any_limiter.status("plain")["burst"] == 10  # type: ignore[index]
    assert any_limiter.limit("plain", rate=10, per="1h", burst=None) == "unchanged"
    assert any_limiter.limit("plain", rate=10, per="1h", burst=10) == "unchanged"
    # A burst below the rate: smaller bursts, the same sustained rate.
    any_limiter.limit("small", rate=10, per="1h", burst=2)
    assert any_limiter.check("small", cost=2).allowed
    assert not any_limiter.check("small").allowed


def test_changing_the_burst_carries_the_consumed_units_over(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("b", rate=10, per="1h")
    any_limiter.check("b", cost=7)
    assert any_limiter.limit("b", rate=10, per="1h", burst=50) == "updated"
    assert any_limiter.status("b")["remaining"] == 43  # type: ignore[index]
    assert any_limiter.limit("b", rate=10, per="1h", burst=50) == "unchanged"
    any_limiter.check("b", cost=40)
    # 47 consumed: nothing left of a burst of 20.
    assert any_limiter.limit("b", rate=10, per="1h", burst=20) == "updated"
    assert any_limiter.status("b")["remaining"] == 0  # type: ignore[index]
    assert any_limiter.limit("b", rate=10, per="1h") == "updated"
    assert any_limiter.status("b")["burst"] == 10  # type: ignore[index]


@pytest.mark.parametrize("algorithm", ["sliding_window_log", "fixed_window_counter"])
def test_a_burst_applies_to_token_buckets_only(any_limiter: AnyLimiter, algorithm: str) -> None:
    with pytest.raises(flint.InvalidArgument) as caught:
        any_limiter.limit("w", rate=10, per="1h", algorithm=algorithm, burst=50)
    # Refused before anything is sent: the same words from both.
    assert str(caught.value) == (
        f'for key "w": burst 50 is invalid for {algorithm}: burst applies to token_bucket '
        f"only ({algorithm} holds at most its rate, 10 units, per window); use the "
        f"token_bucket algorithm, or a larger rate, or leave burst out"
    )
    assert caught.value.key == "w"
    assert any_limiter.status("w") is None
    # The rate itself is accepted: it changes nothing.
    assert any_limiter.limit("w", rate=10, per="1h", algorithm=algorithm, burst=10) == "created"
    assert any_limiter.status("w")["burst"] == 10  # type: ignore[index]


def test_a_cost_above_the_burst_is_refused_naming_it(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("b", rate=10, per="1h", burst=50)
    assert any_limiter.check("b", cost=50).allowed
    for call, text in [
        (
            lambda: any_limiter.check("b", cost=51),
            'cost 51 for key "b" is invalid: the cost must be between 1 and the limit\'s '
            "burst (50); a larger cost could never be allowed (or give the limit a larger "
            "burst)",
        ),
        (lambda: any_limiter.peek("b", cost=51), 'cost 51 for key "b" is invalid'),
        (lambda: any_limiter.acquire("b", cost=51), 'cost 51 for key "b" is invalid'),
        (
            lambda: any_limiter.refund("b", cost=51),
            'refund cost 51 for key "b" is invalid: the cost must be between 1 and the '
            "limit's burst (50), the most a check can have consumed",
        ),
    ]:
        with pytest.raises(flint.InvalidArgument) as caught:
            call()
        assert str(caught.value).startswith(text), str(caught.value)


@pytest.mark.parametrize(
    ("burst", "text"),
    [
        (0, 'burst 0 for key "k" is not positive: pass a whole number ≥ 1 such as 500'),
        (-1, 'burst -1 for key "k" is not positive: pass a whole number ≥ 1 such as 500'),
        (True, 'burst True for key "k" is a bool, not an integer: pass a whole number such as 500'),
        (2.5, 'burst 2.5 for key "k" is a float, not an integer: pass a whole number such as 500'),
        ("5", "burst '5' for key \"k\" is a str, not an integer"),
        (10**13, 'for key "k": burst 10000000000000 is too large: the largest burst is'),
    ],
)
def test_bad_bursts_are_refused(any_limiter: AnyLimiter, burst: object, text: str) -> None:
    with pytest.raises(flint.InvalidArgument) as caught:
        any_limiter.limit("k", rate=10, per="1h", burst=burst)  # type: ignore[arg-type]
    assert str(caught.value).startswith(text), str(caught.value)
    assert any_limiter.status("k") is None


async def test_alimit_and_rate_limit_take_a_burst(any_limiter: AnyLimiter) -> None:
    assert await any_limiter.alimit("a", rate=1, per="1h", burst=3) == "created"
    assert any_limiter.status("a")["burst"] == 3  # type: ignore[index]

    @any_limiter.rate_limit("d", rate=1, per="1h", burst=2)
    def handler() -> str:
        return "ok"

    assert handler() == "ok" and handler() == "ok"
    with pytest.raises(flint.RateLimitExceeded):
        handler()


@pytest.mark.parametrize(
    ("per", "per_ms", "shown"),
    [("250ms", 250, "250ms"), (90, 90_000, "90s"), (datetime.timedelta(days=1), 86_400_000, "1d")],
)
def test_per_forms(any_limiter: AnyLimiter, per: object, per_ms: int, shown: str) -> None:
    any_limiter.limit("k", rate=5, per=per)
    status = any_limiter.status("k")
    assert status is not None
    assert (status["per_ms"], status["per"]) == (per_ms, shown)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allow_and_check_until_denied(any_limiter: AnyLimiter, algorithm: str) -> None:
    any_limiter.limit("api:user-42", rate=3, per="1h", algorithm=algorithm)
    assert any_limiter.allow("api:user-42") is True
    result = any_limiter.check("api:user-42", cost=2)
    assert isinstance(result, flint.CheckResult)
    assert result.allowed and bool(result)
    assert (result.key, result.remaining, result.limit, result.cost) == ("api:user-42", 0, 3, 2)
    assert (result.algorithm, result.retry_after) == (algorithm, 0.0)
    assert result.reset_at > time.time()
    assert repr(result).startswith(
        "CheckResult(key='api:user-42', allowed=True, remaining=0, limit=3, cost=2"
    )
    assert set(result.to_dict()) == RESULT_FIELDS

    denied = any_limiter.check("api:user-42")
    assert not denied.allowed and not bool(denied)
    assert (denied.remaining, denied.cost) == (0, 1)
    assert 0 < denied.retry_after <= 3600
    assert any_limiter.allow("api:user-42") is False


def test_a_denial_consumes_nothing_and_is_counted(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=5, per="1h")
    assert any_limiter.check("k", cost=4).allowed
    assert not any_limiter.check("k", cost=2).allowed
    assert any_limiter.check("k", cost=1).allowed
    status = any_limiter.status("k")
    assert status is not None
    assert (status["remaining"], status["allowed"], status["denied"]) == (0, 2, 1)
    assert (status["allowed_cost"], status["denied_cost"]) == (5, 2)
    assert status["last_seen"] is not None and status["last_seen"] <= time.time() + 1


def test_keys_with_any_character(any_limiter: AnyLimiter) -> None:
    keys = ["route:/v1/chat", "a b%20c?d=e&f#g", "ключ/ü/🙂", "..", "x" * 1024]
    for key in keys:
        assert any_limiter.limit(key, rate=2, per="1h") == "created"
        assert any_limiter.check(key).key == key
        status = any_limiter.status(key)
        assert status is not None and status["key"] == key
        assert len(any_limiter.history(key)) == 1
    assert [s["key"] for s in any_limiter.list()] == sorted(keys)
    for key in keys:
        any_limiter.remove(key)
        assert any_limiter.status(key) is None


# -- check_all ----------------------------------------------------------------------


def test_check_all_takes_every_item_form(any_limiter: AnyLimiter) -> None:
    for key in ("user:42", "org:acme", "route:/v1/chat"):
        any_limiter.limit(key, rate=20, per="1h")
    result = any_limiter.check_all(
        ["user:42", {"key": "org:acme", "cost": 10}, ("route:/v1/chat", 3), {"key": "user:42"}]
    )
    assert set(result) == {"allowed", "denied_key", "results"}
    assert result["allowed"] is True and result["denied_key"] is None
    assert [(r["key"], r["cost"]) for r in result["results"]] == [
        ("user:42", 1),
        ("org:acme", 10),
        ("route:/v1/chat", 3),
        ("user:42", 1),
    ]
    assert all(set(r) == RESULT_FIELDS and r["allowed"] for r in result["results"])
    remaining = {s["key"]: s["remaining"] for s in any_limiter.list()}
    assert remaining == {"user:42": 18, "org:acme": 10, "route:/v1/chat": 17}
    assert any_limiter.allow_all(iter(["user:42", ("org:acme", 1)])) is True


def test_check_all_sums_duplicates(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("a", rate=3, per="1h")
    any_limiter.check("a")
    assert not any_limiter.check_all([("a", 1), ("a", 2)])["allowed"]
    assert any_limiter.status("a")["remaining"] == 2  # type: ignore[index]
    assert any_limiter.check_all([("a", 1), {"key": "a"}])["allowed"]
    assert any_limiter.status("a")["remaining"] == 0  # type: ignore[index]
    with pytest.raises(flint.InvalidArgument) as caught:
        any_limiter.check_all([("a", 2), ("a", 2)])
    assert str(caught.value).startswith(
        'the costs given for key "a" in one check_all() sum to 4, more than its rate (3)'
    )


def test_check_all_is_all_or_nothing(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("a", rate=5, per="1h")
    any_limiter.limit("b", rate=1, per="1h")
    any_limiter.limit("c", rate=1, per="1h")
    assert any_limiter.allow("b")
    assert any_limiter.allow("c")
    result = any_limiter.check_all(["a", ("b", 1), "c"])
    assert result["allowed"] is False
    assert result["denied_key"] == "b", "the first key that lacked room"
    assert [r["allowed"] for r in result["results"]] == [False, False, False]
    assert any_limiter.status("a")["remaining"] == 5, "nothing consumed"  # type: ignore[index]
    assert any_limiter.allow_all(["a", "b"]) is False
    # Only the keys that lacked room count a denial; "a" records that it was blocked.
    assert [s["denied"] for s in any_limiter.list()] == [0, 2, 1]
    assert [e["blocked_by_other"] for e in any_limiter.history("a")] == [True, True]
    assert [e["blocked_by_other"] for e in any_limiter.history("b")] == [False, False, False]


# -- reset, remove, status, list, history, top ----------------------------------------


def test_reset_refills_and_keeps_counters(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=2, per="1h")
    any_limiter.check("k", cost=2)
    any_limiter.check("k")
    assert any_limiter.reset("k") is None
    status = any_limiter.status("k")
    assert status is not None
    assert (status["remaining"], status["allowed"], status["denied"]) == (2, 1, 1)
    assert any_limiter.check("k", cost=2).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_refund_gives_units_back_up_to_full_capacity(
    any_limiter: AnyLimiter, algorithm: str
) -> None:
    any_limiter.limit("r", rate=3, per="1h", algorithm=algorithm)
    assert any_limiter.check("r", cost=3).allowed
    assert not any_limiter.allow("r")
    assert any_limiter.refund("r", cost=2) is None
    status = any_limiter.status("r")
    assert status is not None
    assert status["remaining"] == 2
    counted = [status[f] for f in ["allowed", "denied", "allowed_cost", "denied_cost"]]
    assert counted == [1, 1, 3, 1], "counters keep what was admitted and denied"
    assert len(any_limiter.history("r")) == 2, "a refund is not a decision"
    assert any_limiter.check("r", cost=2).allowed
    any_limiter.refund("r")
    assert any_limiter.status("r")["remaining"] == 1  # type: ignore[index]
    # Never beyond full capacity, and at full capacity nothing changes.
    any_limiter.refund("r", cost=3)
    any_limiter.refund("r", cost=3)
    assert any_limiter.status("r")["remaining"] == 3  # type: ignore[index]
    assert any_limiter.check("r", cost=3).allowed
    assert not any_limiter.allow("r")
    for cost in (0, 4):
        with pytest.raises(flint.InvalidArgument):
            any_limiter.refund("r", cost=cost)
    assert any_limiter.status("r")["remaining"] == 0  # type: ignore[index]


def test_remove_deletes_the_limit(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=2, per="1h")
    any_limiter.check("k")
    assert any_limiter.remove("k") is None
    assert any_limiter.status("k") is None
    assert any_limiter.list() == []
    with pytest.raises(flint.LimitNotFound):
        any_limiter.check("k")
    with pytest.raises(flint.LimitNotFound):
        any_limiter.remove("k")
    assert any_limiter.limit("k", rate=2, per="1h") == "created"
    assert any_limiter.history("k") == [], "history went with the limit"


def test_status_and_list(any_limiter: AnyLimiter) -> None:
    assert any_limiter.status("nope") is None
    assert any_limiter.status("") is None
    assert any_limiter.list() == []
    for key in ("b:2", "a:1", "b:1", "c"):
        any_limiter.limit(key, rate=7, per="1h", algorithm="sliding_window_log")
    status = any_limiter.status("a:1")
    assert status is not None and set(status) == STATUS_FIELDS
    assert (status["remaining"], status["algorithm"], status["last_seen"]) == (
        7,
        "sliding_window_log",
        None,
    )
    assert [s["key"] for s in any_limiter.list()] == ["a:1", "b:1", "b:2", "c"]
    assert [s["key"] for s in any_limiter.list("b:")] == ["b:1", "b:2"]
    assert [s["key"] for s in any_limiter.list(prefix="c")] == ["c"]
    assert any_limiter.list("zzz") == []
    assert [s["key"] for s in any_limiter.list(None)] == ["a:1", "b:1", "b:2", "c"]
    assert all(set(s) == STATUS_FIELDS for s in any_limiter.list())


def test_history_oldest_first_with_a_limit(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=3, per="1h")
    assert any_limiter.history("k") == []
    for cost in (1, 2, 3, 1):
        any_limiter.check("k", cost=cost)
    events = any_limiter.history("k")
    assert [(e["cost"], e["allowed"], e["remaining"]) for e in events] == [
        (1, True, 2),
        (2, True, 0),
        (3, False, 0),
        (1, False, 0),
    ]
    assert set(events[0]) == {
        "at",
        "cost",
        "allowed",
        "blocked_by_other",
        "shadow_denied",
        "remaining",
    }
    assert events[0]["at"] <= events[-1]["at"] <= time.time() + 1
    assert [e["cost"] for e in any_limiter.history("k", 2)] == [3, 1]
    assert [e["cost"] for e in any_limiter.history("k", limit=1)] == [1]
    assert any_limiter.history("k", 0) == []


def test_top(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("a", rate=1, per="1h")
    any_limiter.limit("b", rate=5, per="1h")
    any_limiter.limit("quiet", rate=5, per="1h")
    for _ in range(3):
        any_limiter.check("a")
    any_limiter.check("b", cost=4)
    any_limiter.check("b", cost=4)
    assert [s["key"] for s in any_limiter.top()] == ["a", "b"]
    assert [s["key"] for s in any_limiter.top("denied_cost")] == ["b", "a"]
    assert [s["key"] for s in any_limiter.top(by="allowed")] == ["a", "b"]
    assert [s["key"] for s in any_limiter.top("checks", 1)] == ["a"]
    assert [s["key"] for s in any_limiter.top("allowed_cost", limit=5)] == ["b", "a"]
    assert all(set(s) == STATUS_FIELDS for s in any_limiter.top())


# -- doctor, compact, flush -----------------------------------------------------------


def test_doctor(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=2, per="1h")
    any_limiter.check("k")
    report = any_limiter.doctor()
    assert set(report) == {
        "ok",
        "checks",
        "sync",
        "version",
        "data_dir",
        "log_bytes",
        "snapshot_bytes",
        "keys",
        "pending_events",
        "templates",
        "memory_bytes",
        "process_resident_bytes",
    }
    assert report["ok"] is True
    assert (report["sync"], report["version"], report["keys"]) == ("always", flint.__version__, 1)
    assert report["log_bytes"] > 0
    names = [c["name"] for c in report["checks"]]
    assert "lock" in " ".join(names).lower()
    assert all(set(c) == {"name", "ok", "level", "detail"} for c in report["checks"])
    assert all(c["ok"] for c in report["checks"])


def test_compact_and_flush(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("a", rate=3, per="1h")
    any_limiter.limit("b", rate=3, per="1h")
    any_limiter.check("a", cost=2)
    assert any_limiter.flush() is None
    report = any_limiter.compact()
    assert set(report) == {"keys", "snapshot_bytes", "log_bytes_before", "log_bytes_after"}
    assert report["keys"] == 2
    assert report["log_bytes_after"] < report["log_bytes_before"]
    assert any_limiter.status("a")["remaining"] == 1  # type: ignore[index]
    assert any_limiter.doctor()["snapshot_bytes"] == report["snapshot_bytes"]


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_peek_answers_what_check_would_and_consumes_nothing(
    any_limiter: AnyLimiter, algorithm: str
) -> None:
    any_limiter.limit("p", rate=3, per="1h", algorithm=algorithm)
    for cost in [1, 2, 1, 1]:
        counted = ["remaining", "allowed", "denied", "allowed_cost", "denied_cost", "last_seen"]
        before = any_limiter.status("p")
        peeked = any_limiter.peek("p", cost=cost)
        assert isinstance(peeked, flint.CheckResult)
        after = any_limiter.status("p")
        assert before is not None and after is not None
        assert [after[f] for f in counted] == [before[f] for f in counted], "a peek changes nothing"
        checked = any_limiter.check("p", cost=cost)
        for field in ["allowed", "remaining", "limit", "key", "algorithm", "cost"]:
            assert getattr(peeked, field) == getattr(checked, field), field
    assert len(any_limiter.history("p", 100)) == 4, "only the checks are in the history"
    with pytest.raises(flint.InvalidArgument):
        any_limiter.peek("p", cost=4)
    with pytest.raises(flint.InvalidArgument):
        any_limiter.peek("p", cost=0)


def test_acquire_waits_for_the_units_and_records_no_denial_meanwhile(
    any_limiter: AnyLimiter,
) -> None:
    any_limiter.limit("w", rate=4, per="1s")  # one unit back every 250 ms
    assert any_limiter.check("w", cost=4).allowed
    result = any_limiter.acquire("w", cost=1, timeout=5)
    assert isinstance(result, flint.CheckResult) and result.allowed
    status = any_limiter.status("w")
    assert status is not None
    assert (status["allowed"], status["denied"]) == (2, 0), "the wait peeks, records nothing"


def test_acquire_gives_up_at_once_when_the_wait_would_outlast_the_timeout(
    any_limiter: AnyLimiter,
) -> None:
    any_limiter.limit("slow", rate=1, per="1h")
    assert any_limiter.check("slow").allowed
    result = any_limiter.acquire("slow", timeout=0.5)
    assert not result.allowed and result.retry_after > 0.5
    status = any_limiter.status("slow")
    assert status is not None and status["denied"] == 1, "the refusal is counted once"
    for bad in [-1, float("nan"), "1s", True]:
        with pytest.raises(flint.InvalidArgument) as caught:
            any_limiter.acquire("slow", timeout=bad)  # type: ignore[arg-type]
        assert "timeout" in str(caught.value) and caught.value.key == "slow"


async def test_aacquire_sleeps_without_blocking_the_loop(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("aw", rate=4, per="1s")
    assert any_limiter.check("aw", cost=4).allowed
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    result = await any_limiter.aacquire("aw", cost=2, timeout=5)
    done = True
    await task
    assert result.allowed
    assert ticks >= 5, "the loop kept running while aacquire waited"


def test_rate_limit_with_wait(any_limiter: AnyLimiter) -> None:
    calls = []

    @any_limiter.rate_limit("dw", rate=4, per="1s", wait=True)
    def waits() -> None:
        calls.append("waits")

    @any_limiter.rate_limit("dn", rate=1, per="1h", wait=0.2)
    def gives_up() -> None:
        calls.append("gives_up")

    for _ in range(5):  # the fifth waits for a unit to come back
        waits()
    gives_up()
    with pytest.raises(flint.RateLimitExceeded):
        gives_up()
    assert calls == ["waits"] * 5 + ["gives_up"]
    with pytest.raises(flint.InvalidArgument):
        any_limiter.rate_limit("bad", rate=1, per="1h", wait=-1)


def test_an_unknown_key_raises_limit_not_found(any_limiter: AnyLimiter) -> None:
    text = 'no limit is configured for key "nope": '
    any_limiter.limit("known", rate=1, per="1h")
    calls = [
        lambda: any_limiter.check("nope"),
        lambda: any_limiter.peek("nope"),
        lambda: any_limiter.allow("nope", cost=1),
        lambda: any_limiter.check_all(["known", ("nope", 1)]),
        lambda: any_limiter.allow_all(["known", "nope"]),
        lambda: any_limiter.reset("nope"),
        lambda: any_limiter.refund("nope"),
        lambda: any_limiter.refund("nope", cost=2),
        lambda: any_limiter.remove("nope"),
        lambda: any_limiter.history("nope"),
    ]
    for call in calls:
        with pytest.raises(flint.LimitNotFound) as caught:
            call()
        assert isinstance(caught.value, KeyError)
        assert caught.value.key == "nope"
        assert str(caught.value).startswith(text), str(caught.value)
        if shared(any_limiter):
            assert any_limiter.url in str(caught.value)  # type: ignore[union-attr]
    assert any_limiter.status("known")["remaining"] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (
            lambda lim: lim.limit("k", rate=0, per="1h"),
            'rate 0 for key "k" is not positive: pass a whole number ≥ 1 such as 100',
        ),
        (
            lambda lim: lim.limit("k", rate=True, per="1h"),
            'rate True for key "k" is a bool, not an integer: pass a whole number such as 100',
        ),
        (
            lambda lim: lim.limit("k", rate=2.5, per="1h"),
            'rate 2.5 for key "k" is a float, not an integer: pass a whole number such as 100',
        ),
        (lambda lim: lim.limit("k", rate=10**40, per="1h"), "rate 1000000000000000000000"),
        (lambda lim: lim.limit("k", rate=1, per="1M"), 'per for key "k": '),
        (lambda lim: lim.limit("k", rate=1, per="10"), 'per for key "k": '),
        (lambda lim: lim.limit("k", rate=1, per=0), 'per for key "k": '),
        (lambda lim: lim.limit("k", rate=1, per=-1), 'per for key "k": '),
        (lambda lim: lim.limit("k", rate=1, per="400d"), 'per for key "k": '),
        (lambda lim: lim.limit("k", rate=1, per="1h", algorithm="leaky"), 'for key "k": '),
        (lambda lim: lim.limit("", rate=1, per="1h"), 'key "" is empty: '),
        (lambda lim: lim.limit("x" * 1025, rate=1, per="1h"), 'key "xxxx'),
        (lambda lim: lim.limit(42, rate=1, per="1h"), "key 42 is an int, not a str: "),
        (lambda lim: lim.check("k", cost=0), 'cost 0 for key "k" is not positive'),
        (lambda lim: lim.check("k", cost=-1), 'cost -1 for key "k" is not positive'),
        (lambda lim: lim.check("k", cost=True), 'cost True for key "k" is a bool'),
        (lambda lim: lim.check("k", cost=1.0), 'cost 1.0 for key "k" is a float'),
        (
            lambda lim: lim.check("k", cost=11),
            'cost 11 for key "k" is invalid: the cost must be between 1 and the limit\'s rate (10)',
        ),
        (lambda lim: lim.check_all([("k", 11)]), 'cost 11 for key "k" is invalid'),
        (lambda lim: lim.refund("k", cost=0), 'cost 0 for key "k" is not positive'),
        (lambda lim: lim.refund("k", cost=True), 'cost True for key "k" is a bool'),
        (
            lambda lim: lim.refund("k", cost=11),
            'refund cost 11 for key "k" is invalid: the cost must be between 1 and the '
            "limit's rate (10)",
        ),
        (lambda lim: lim.check_all("k"), "check_all() takes a list of items, not a single item"),
        (lambda lim: lim.check_all([("k", 1, 2)]), "check_all() item 0 is ('k', 1, 2)"),
        (lambda lim: lim.history("k", -1), 'limit -1 for key "k" is negative'),
        (lambda lim: lim.top("nope"), ""),
        (lambda lim: lim.list(prefix=3), "prefix 3 is an int, not a str"),
    ],
)
def test_bad_arguments_raise_invalid_argument_with_the_same_message(
    any_limiter: AnyLimiter, call: object, text: str
) -> None:
    any_limiter.limit("k", rate=10, per="1h")
    with pytest.raises(flint.InvalidArgument) as caught:
        call(any_limiter)  # type: ignore[operator]
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(text), str(caught.value)
    assert any_limiter.status("k")["remaining"] == 10, "nothing consumed"  # type: ignore[index]
    assert any_limiter.history("k") == []


def test_messages_match_between_the_two(tmp_path, flint_server) -> None:  # type: ignore[no-untyped-def]
    """The same bad calls give the same message from both, the server's followed by its
    URL (a LimitNotFound from the server names POST /v1/limits as the fix instead)."""
    from conftest import shared_limiter

    calls = [
        lambda lim: lim.limit("k", rate=0, per="1h"),
        lambda lim: lim.limit("k", rate=1, per="1M"),
        lambda lim: lim.limit("", rate=1, per="1h"),
        lambda lim: lim.limit("k" * 2000, rate=1, per="1h"),
        lambda lim: lim.limit("k", rate=1, per="1h", algorithm="leaky"),
        lambda lim: lim.check("k", cost=11),
        lambda lim: lim.check_all([("k", 5), ("k", 6)]),
        lambda lim: lim.refund("k", cost=11),
        lambda lim: lim.top("nope"),
    ]
    with flint.Limiter(tmp_path / ".flint") as embedded, shared_limiter(flint_server) as remote:
        for lim in (embedded, remote):
            for s in lim.list():
                lim.remove(s["key"])
            lim.limit("k", rate=10, per="1h")
        for call in calls:
            errors = []
            for lim in (embedded, remote):
                with pytest.raises(flint.InvalidArgument) as caught:
                    call(lim)
                errors.append(caught.value)
            local, far = errors
            assert str(far) in (str(local), f"{local} (Flint server at {remote.url})")
            assert local.key == far.key


# -- the decorator, async methods, closing ---------------------------------------------


def test_rate_limit_decorator(any_limiter: AnyLimiter) -> None:
    calls = []

    @any_limiter.rate_limit("email:send", rate=2, per="1h")
    def send_email(to: str) -> str:
        """Send one email."""
        calls.append(to)
        return f"sent to {to}"

    assert (send_email.__name__, send_email.__doc__) == ("send_email", "Send one email.")
    assert send_email("a") == "sent to a"
    assert send_email(to="b") == "sent to b"
    with pytest.raises(flint.RateLimitExceeded) as caught:
        send_email("c")
    assert calls == ["a", "b"]
    error = caught.value
    assert (error.key, error.remaining) == ("email:send", 0)
    assert 0 < error.retry_after <= 3600 and error.reset_at > time.time()
    assert any_limiter.status("email:send")["rate"] == 2  # type: ignore[index]


async def test_rate_limit_decorator_on_async_functions(any_limiter: AnyLimiter) -> None:
    @any_limiter.rate_limit("async:k", rate=1, per="1h", algorithm="sliding_window_log", cost=1)
    async def handler() -> str:
        """Handle."""
        await asyncio.sleep(0)
        return "ok"

    assert asyncio.iscoroutinefunction(handler)
    assert (handler.__name__, handler.__doc__) == ("handler", "Handle.")
    assert await handler() == "ok"
    with pytest.raises(flint.RateLimitExceeded):
        await handler()


async def test_every_async_method(any_limiter: AnyLimiter) -> None:
    assert await any_limiter.alimit("a", rate=3, per="1h") == "created"
    assert await any_limiter.aallow("a") is True
    result = await any_limiter.acheck("a", cost=2)
    assert isinstance(result, flint.CheckResult) and result.remaining == 0
    await any_limiter.alimit("b", rate=3, per="1h")
    assert await any_limiter.aallow_all(iter(["b"])) is True
    assert (await any_limiter.acheck_all(["a", "b"]))["denied_key"] == "a"
    assert (await any_limiter.astatus("a"))["allowed"] == 2  # type: ignore[index]
    assert await any_limiter.astatus("nope") is None
    assert [s["key"] for s in await any_limiter.alist()] == ["a", "b"]
    assert [s["key"] for s in await any_limiter.alist("b")] == ["b"]
    assert len(await any_limiter.ahistory("a")) == 3
    assert len(await any_limiter.ahistory("a", 1)) == 1
    assert (await any_limiter.atop())[0]["key"] == "a"
    assert (await any_limiter.atop("allowed", 1))[0]["key"] == "a"
    peeked = await any_limiter.apeek("a")
    assert isinstance(peeked, flint.CheckResult) and not peeked.allowed
    assert await any_limiter.arefund("a", cost=2) is None
    assert (await any_limiter.astatus("a"))["remaining"] == 2  # type: ignore[index]
    await any_limiter.arefund("a")
    assert (await any_limiter.astatus("a"))["remaining"] == 3  # type: ignore[index]
    await any_limiter.acheck("a", cost=3)
    await any_limiter.areset("a")
    assert (await any_limiter.astatus("a"))["remaining"] == 3  # type: ignore[index]
    await any_limiter.aflush()
    assert (await any_limiter.acompact())["keys"] == 2
    assert (await any_limiter.adoctor())["ok"] is True
    await any_limiter.aremove("b")
    with pytest.raises(flint.LimitNotFound):
        await any_limiter.acheck("b")


async def test_async_methods_do_not_block_the_loop(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=1000, per="1h")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(tick())
    results = await asyncio.gather(*(any_limiter.acheck("k") for _ in range(20)))
    ticker.cancel()
    assert all(r.allowed for r in results)
    assert ticks > 0


def test_threads_never_over_admit(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("k", rate=50, per="1h")
    allowed = []

    def worker() -> None:
        allowed.append(sum(any_limiter.allow("k") for _ in range(20)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 50


def test_context_manager_and_close(any_limiter: AnyLimiter) -> None:
    with any_limiter as entered:
        assert entered is any_limiter
        entered.limit("k", rate=1, per="1h")
    with pytest.raises(flint.FlintError, match="closed"):
        any_limiter.check("k")
    with pytest.raises(flint.FlintError, match="closed"):
        any_limiter.status("k")
    any_limiter.close()  # closing twice is fine
