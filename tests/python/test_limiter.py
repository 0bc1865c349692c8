"""Every public method of flint.Limiter, on a manual clock."""

from __future__ import annotations

import datetime
import os

import pytest

import flint

from conftest import START


def test_limit_is_idempotent_and_reports_the_change(limiter: flint.Limiter) -> None:
    assert limiter.limit("k", rate=10, per="1m") == "created"
    size = limiter.doctor()["log_bytes"]
    assert limiter.limit("k", rate=10, per="1m") == "unchanged"
    assert limiter.limit("k", rate=10, per=60) == "unchanged"
    assert limiter.limit("k", rate=10, per=datetime.timedelta(minutes=1)) == "unchanged"
    assert limiter.doctor()["log_bytes"] == size, "an unchanged limit writes nothing"
    assert limiter.limit("k", rate=20, per="1m") == "updated"


@pytest.mark.parametrize(
    ("per", "per_ms", "shown"),
    [
        ("250ms", 250, "250ms"),
        ("1s", 1000, "1s"),
        ("90s", 90_000, "90s"),
        ("1d", 86_400_000, "1d"),
        (0.25, 250, "250ms"),
        (60, 60_000, "1m"),
        (datetime.timedelta(hours=1), 3_600_000, "1h"),
    ],
)
def test_per_accepts_strings_seconds_and_timedelta(
    limiter: flint.Limiter, per: object, per_ms: int, shown: str
) -> None:
    limiter.limit("k", rate=5, per=per)
    status = limiter.status("k")
    assert status is not None
    assert (status["per_ms"], status["per"]) == (per_ms, shown)


def test_check_result_fields_repr_equality_and_bool(limiter: flint.Limiter) -> None:
    limiter.limit("k", rate=10, per="10s")
    result = limiter.check("k", cost=4)
    assert result.allowed and bool(result)
    assert (result.key, result.remaining, result.limit, result.cost) == ("k", 6, 10, 4)
    assert result.algorithm == "token_bucket"
    assert result.retry_after == 0.0
    assert result.reset_at == pytest.approx(START + 4)
    assert repr(result).startswith("CheckResult(key='k', allowed=True, remaining=6")
    assert "retry_after=0.0" in repr(result)
    with pytest.raises(TypeError):
        flint.CheckResult()  # only the engine makes them
    with pytest.raises(AttributeError):
        result.allowed = False  # type: ignore[misc]
    assert result != limiter.check("k", cost=1)
    assert result != "not a result"
    assert result.to_dict()["remaining"] == 6
    limiter.check("k", cost=5)
    denied = limiter.check("k", cost=3)
    assert not denied and not denied.allowed
    assert denied.retry_after == pytest.approx(3.0)
    # A denial changes nothing, so the same request again is an equal result.
    again = limiter.check("k", cost=3)
    assert again == denied and again is not denied
    assert hash(again) == hash(denied)
    assert len({again, denied}) == 1


def test_allow_returns_a_bool_and_a_denial_consumes_nothing(
    limiter: flint.Limiter, clock: flint.ManualClock
) -> None:
    limiter.limit("k", rate=2, per="1s", algorithm="sliding_window_log")
    assert limiter.allow("k") is True
    assert limiter.allow("k") is True
    assert limiter.allow("k") is False
    status = limiter.status("k")
    assert status is not None
    assert (status["remaining"], status["denied"], status["denied_cost"]) == (0, 1, 1)
    clock.advance(1.0)
    assert limiter.allow("k", cost=2) is True


def test_each_algorithm_enforces_its_rate(limiter: flint.Limiter, clock: flint.ManualClock) -> None:
    for algorithm in ("token_bucket", "sliding_window_log", "fixed_window_counter"):
        limiter.limit(algorithm, rate=5, per="1m", algorithm=algorithm)
        allowed = sum(limiter.allow(algorithm) for _ in range(20))
        assert allowed == 5, algorithm
    # Fixed windows are aligned to the epoch: the next minute starts fresh.
    clock.set((START // 60 + 1) * 60)
    assert limiter.allow("fixed_window_counter")


def test_a_burst_refills_at_the_rate_and_survives_a_reopen(
    limiter: flint.Limiter, clock: flint.ManualClock, data_dir
) -> None:  # type: ignore[no-untyped-def]
    assert limiter.limit("b", rate=10, per="1s", burst=50) == "created"
    assert limiter.check("b", cost=50).allowed
    denied = limiter.check("b")
    assert (denied.allowed, denied.retry_after, denied.limit) == (False, 0.1, 50)
    assert denied.reset_at == pytest.approx(START + 5)
    clock.advance(1.0)
    assert limiter.status("b")["remaining"] == 10  # type: ignore[index]
    clock.advance(10.0)
    assert limiter.status("b")["remaining"] == 50, "capped at the burst"  # type: ignore[index]
    limiter.check("b", cost=20)
    before = limiter.status("b")
    limiter.close()
    with flint.Limiter(data_dir=data_dir, clock=clock) as reopened:
        assert reopened.status("b") == before
        reopened.compact()
    with flint.Limiter(data_dir=data_dir, clock=clock) as reopened:
        assert reopened.status("b") == before


def test_check_all_is_all_or_nothing(limiter: flint.Limiter) -> None:
    limiter.limit("user:42", rate=10, per="1m")
    limiter.limit("org:acme", rate=10, per="1m")
    limiter.limit("route:/v1/chat", rate=1, per="1m")
    items = ["user:42", {"key": "org:acme", "cost": 10}, ("route:/v1/chat", 1)]
    result = limiter.check_all(items)
    assert result["allowed"] is True and result["denied_key"] is None
    assert [r["key"] for r in result["results"]] == ["user:42", "org:acme", "route:/v1/chat"]
    assert set(result["results"][0]) == {
        "key",
        "allowed",
        "remaining",
        "reset_at",
        "retry_after",
        "limit",
        "algorithm",
        "cost",
        "shadow_denied",
    }
    denied = limiter.check_all(["user:42", ("route:/v1/chat", 1)])
    assert denied["allowed"] is False
    assert denied["denied_key"] == "route:/v1/chat"
    assert limiter.status("user:42")["remaining"] == 9, "nothing consumed"  # type: ignore[index]
    assert limiter.allow_all(["user:42", "user:42"]) is True, "duplicates are summed"
    assert limiter.status("user:42")["remaining"] == 7  # type: ignore[index]


def test_reset_and_remove(limiter: flint.Limiter) -> None:
    limiter.limit("k", rate=3, per="1h")
    limiter.check("k", cost=3)
    limiter.reset("k")
    assert limiter.status("k")["remaining"] == 3  # type: ignore[index]
    limiter.remove("k")
    assert limiter.status("k") is None
    with pytest.raises(flint.LimitNotFound):
        limiter.check("k")


def test_status_and_list(limiter: flint.Limiter, clock: flint.ManualClock) -> None:
    assert limiter.status("nope") is None
    for key in ("b:2", "a:1", "b:1"):
        limiter.limit(key, rate=5, per="1m")
    limiter.check("a:1", cost=2)
    status = limiter.status("a:1")
    assert status == {
        "key": "a:1",
        "rate": 5,
        "burst": 5,
        "per": "1m",
        "per_ms": 60_000,
        "algorithm": "token_bucket",
        "mode": "enforce",
        "template": None,
        "remaining": 3,
        "reset_at": pytest.approx(START + 24),
        "allowed": 1,
        "denied": 0,
        "allowed_cost": 2,
        "denied_cost": 0,
        "shadow_denied": 0,
        "last_seen": pytest.approx(START),
    }
    assert [s["key"] for s in limiter.list()] == ["a:1", "b:1", "b:2"]
    assert [s["key"] for s in limiter.list(prefix="b:")] == ["b:1", "b:2"]
    assert limiter.list(prefix="zzz") == []
    assert limiter.status("b:1")["last_seen"] is None  # type: ignore[index]


def test_history_is_oldest_first_and_limited(
    limiter: flint.Limiter, clock: flint.ManualClock
) -> None:
    limiter.limit("k", rate=2, per="1h")
    for _ in range(3):
        limiter.check("k")
        clock.advance(1)
    history = limiter.history("k")
    assert [e["allowed"] for e in history] == [True, True, False]
    assert [e["at"] for e in history] == [START, START + 1, START + 2]
    assert history[0] == {
        "at": START,
        "cost": 1,
        "allowed": True,
        "blocked_by_other": False,
        "shadow_denied": False,
        "remaining": 1,
    }
    assert limiter.history("k", limit=1) == history[-1:]
    assert limiter.history("k", 2) == history[-2:]


def test_top_ranks_keys(limiter: flint.Limiter) -> None:
    for key, denials in (("a", 1), ("b", 3), ("c", 0)):
        limiter.limit(key, rate=1, per="1h")
        for _ in range(denials + 1):
            limiter.check(key)
    assert [s["key"] for s in limiter.top()] == ["b", "a"]
    assert [s["key"] for s in limiter.top(by="allowed", limit=2)] == ["a", "b"]
    assert [s["key"] for s in limiter.top("checks", 1)] == ["b"]
    with pytest.raises(flint.InvalidArgument, match="loudest"):
        limiter.top(by="loudest")


def test_doctor_flush_and_compact(limiter: flint.Limiter, data_dir) -> None:
    limiter.limit("k", rate=5, per="1m")
    limiter.check("k")
    report = limiter.doctor()
    assert report["ok"] is True
    assert report["sync"] == "always"
    assert report["data_dir"] == str(data_dir)
    assert report["version"] == flint.__version__
    names = {c["name"] for c in report["checks"]}
    assert {
        "lock",
        "permissions",
        "log",
        "snapshot",
        "torn_tail",
        "pending",
        "compaction",
        "disk_space",
    } <= names
    assert all(set(c) >= {"name", "ok", "detail"} for c in report["checks"])
    assert report["log_bytes"] > 0 and report["snapshot_bytes"] == 0
    limiter.flush()
    compacted = limiter.compact()
    assert compacted["keys"] == 1
    assert limiter.doctor()["snapshot_bytes"] > 0
    assert (data_dir / "flint.snapshot").exists()


def test_close_is_idempotent_and_the_context_manager_closes(data_dir) -> None:
    with flint.Limiter(data_dir=data_dir) as limiter:
        limiter.limit("k", rate=1, per="1s")
    limiter.close()
    with pytest.raises(flint.FlintError, match="closed"):
        limiter.allow("k")
    again = flint.Limiter(data_dir=data_dir)
    assert again.status("k") is not None
    again.close()


def test_manual_clock(clock: flint.ManualClock) -> None:
    assert clock.now() == START
    clock.advance(1.5)
    assert clock.now() == START + 1.5
    clock.set(START - 10)
    assert clock.now() == START - 10
    with pytest.raises(flint.InvalidArgument):
        clock.advance(-1)


def test_a_clock_stepping_back_gains_no_quota(
    limiter: flint.Limiter, clock: flint.ManualClock
) -> None:
    limiter.limit("k", rate=1, per="1m")
    assert limiter.allow("k")
    clock.set(START - 3600)
    assert not limiter.allow("k")


def test_sync_modes_and_options(data_dir) -> None:
    with flint.Limiter(
        data_dir=data_dir, sync="batch", flush_every_ms=10, flush_every_events=5
    ) as lim:
        assert lim.sync == "batch"
        lim.limit("k", rate=100, per="1s")
        for _ in range(12):
            lim.allow("k")
        lim.flush()
        assert lim.doctor()["pending_events"] == 0
    with pytest.raises(flint.InvalidArgument, match="sync mode"):
        flint.Limiter(data_dir=data_dir, sync="sometimes")
    with pytest.raises(flint.InvalidArgument, match="flush_every_ms"):
        flint.Limiter(data_dir=data_dir, flush_every_ms=0)


def test_a_denied_check_all_counts_only_the_key_that_lacked_room(data_dir) -> None:
    with flint.Limiter(data_dir) as limiter:
        limiter.limit("roomy", rate=10, per="1h")
        limiter.limit("full", rate=1, per="1h")
        assert limiter.allow("full")
        assert not limiter.allow_all(["roomy", "full"])
        top = limiter.top(by="denied")
        assert [entry["key"] for entry in top] == ["full"]
        roomy = limiter.status("roomy")
        assert roomy is not None and roomy["denied"] == 0
        (event,) = limiter.history("roomy")
        assert event["allowed"] is False and event["blocked_by_other"] is True
        assert limiter.history("full")[-1]["blocked_by_other"] is False


def test_close_releases_the_log_its_mapping_and_the_lock_at_once(data_dir) -> None:
    limiter = flint.Limiter(data_dir)
    limiter.limit("k", rate=10, per="1m")
    log = str(data_dir / "flint.aof")

    def held() -> list[str]:
        with open("/proc/self/maps") as maps:
            mapped = [line for line in maps if log in line]
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:  # the descriptor listdir itself used
                pass
        return mapped + [target for target in targets if target == log]

    assert held(), "the open log is mapped"
    limiter.close()
    assert held() == [], "close() released the log before the object is collected"
    with flint.Limiter(data_dir) as again:  # the lock is free too
        assert again.allow("k")
    del limiter
