"""The exception tree and the messages: each names the key, the value and the fix,
and a rejected call consumes nothing."""

from __future__ import annotations

import datetime
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flint


def test_exception_tree() -> None:
    assert issubclass(flint.LimitNotFound, flint.FlintError)
    assert issubclass(flint.LimitNotFound, KeyError)
    assert issubclass(flint.InvalidArgument, ValueError)
    assert issubclass(flint.StorageError, OSError)
    assert issubclass(flint.DataDirLocked, flint.StorageError)
    assert issubclass(flint.CorruptedData, flint.StorageError)
    assert issubclass(flint.RateLimitExceeded, flint.FlintError)
    for client_error in (
        flint.FlintConnectionError,
        flint.FlintServerError,
        flint.AuthenticationError,
    ):
        assert issubclass(client_error, flint.FlintError)


@pytest.mark.parametrize(
    ("rate", "fragment"),
    [
        (True, "bool"),
        (1.5, "float"),
        (0, "0"),
        (-3, "-3"),
        (10**30, "absurdly large"),
        (10**13, "10000000000000"),
        ("100", "str"),
    ],
)
def test_bad_rates_are_rejected(limiter: flint.Limiter, rate: object, fragment: str) -> None:
    with pytest.raises(flint.InvalidArgument) as caught:
        limiter.limit("api:k", rate=rate, per="1m")  # type: ignore[arg-type]
    message = str(caught.value)
    assert fragment in message and "api:k" in message, message
    assert limiter.status("api:k") is None


@pytest.mark.parametrize(
    ("per", "fragment"),
    [
        ("1M", "minute or month"),
        ("10", "unit"),
        ("0s", "zero"),
        ("-1s", "-1s"),
        ("", "empty"),
        ("1w", "w"),
        ("1.5s", "1.5s"),
        ("366d", "365"),
        (0, "0"),
        (-5, "-5"),
        (0.0001, "millisecond"),
        (True, "bool"),
        (None, "NoneType"),
        (datetime.timedelta(microseconds=1500), "fraction of a millisecond"),
        (datetime.timedelta(days=-1), "not positive"),
    ],
)
def test_bad_periods_are_rejected(limiter: flint.Limiter, per: object, fragment: str) -> None:
    with pytest.raises(flint.InvalidArgument) as caught:
        limiter.limit("api:k", rate=1, per=per)  # type: ignore[arg-type]
    assert fragment in str(caught.value), str(caught.value)
    assert caught.value.key == "api:k"


def test_bad_algorithm(limiter: flint.Limiter) -> None:
    with pytest.raises(flint.InvalidArgument, match="leaky_bucket"):
        limiter.limit("k", rate=1, per="1s", algorithm="leaky_bucket")


def test_bad_keys(limiter: flint.Limiter) -> None:
    with pytest.raises(flint.InvalidArgument, match="empty"):
        limiter.limit("", rate=1, per="1s")
    with pytest.raises(flint.InvalidArgument, match="1025 bytes"):
        limiter.limit("x" * 1025, rate=1, per="1s")
    with pytest.raises(flint.InvalidArgument, match="not a str"):
        limiter.limit(42, rate=1, per="1s")  # type: ignore[arg-type]
    limiter.limit("ключ:😀", rate=1, per="1s")
    assert limiter.allow("ключ:😀")


@pytest.mark.parametrize("cost", [0, -1, 11, 1.0, True, "1"])
def test_bad_costs_consume_nothing(limiter: flint.Limiter, cost: object) -> None:
    limiter.limit("k", rate=10, per="1m")
    size = limiter.doctor()["log_bytes"]
    with pytest.raises(flint.InvalidArgument) as caught:
        limiter.check("k", cost=cost)  # type: ignore[arg-type]
    assert '"k"' in str(caught.value)
    assert limiter.status("k")["remaining"] == 10  # type: ignore[index]
    assert limiter.doctor()["log_bytes"] == size, "nothing recorded"


def test_unknown_key_is_a_key_error_naming_the_fix(limiter: flint.Limiter) -> None:
    with pytest.raises(KeyError) as caught:
        limiter.check("nope")
    assert isinstance(caught.value, flint.LimitNotFound)
    assert caught.value.key == "nope"
    assert (
        str(caught.value)
        == 'no limit is configured for key "nope": call limit("nope", rate=..., per=...) first'
    )
    for call in (limiter.reset, limiter.remove, limiter.history):
        with pytest.raises(flint.LimitNotFound):
            call("nope")


def test_bad_check_all_items(limiter: flint.Limiter) -> None:
    limiter.limit("k", rate=5, per="1m")
    for items, fragment in (
        ("k", "wrap it in a list"),
        ([3], "item 0"),
        ([("k", 1, 2)], "item 0"),
        ([{"cost": 1}], "item 0"),
        ([{"key": "k", "weight": 1}], "item 0"),
        ([], "no items"),
        (["k", ("k", 0)], "cost 0"),
        ([("k", 3), ("k", 3)], "sum to 6"),
        (["k", "missing"], "missing"),
    ):
        with pytest.raises(flint.FlintError) as caught:
            limiter.check_all(items)  # type: ignore[arg-type]
        assert fragment in str(caught.value), (items, str(caught.value))
    assert limiter.status("k")["remaining"] == 5  # type: ignore[index]


def test_a_second_limiter_on_the_same_directory_is_refused(
    limiter: flint.Limiter, data_dir
) -> None:
    with pytest.raises(flint.DataDirLocked) as caught:
        flint.Limiter(data_dir=data_dir)
    assert caught.value.data_dir == str(data_dir)
    assert "already open in this process" in str(caught.value)


def test_a_damaged_log_is_refused_with_file_and_offset(data_dir) -> None:
    with flint.Limiter(data_dir=data_dir) as limiter:
        limiter.limit("k", rate=100, per="1h")
        offset = limiter.doctor()["log_bytes"]
        for _ in range(3):
            limiter.check("k")
    log = data_dir / "flint.aof"
    damaged = bytearray(log.read_bytes())
    damaged[offset + 12] ^= 0x55
    log.write_bytes(bytes(damaged))
    with pytest.raises(flint.CorruptedData) as caught:
        flint.Limiter(data_dir=data_dir)
    assert caught.value.offset == offset
    assert str(log) in str(caught.value)
    assert log.read_bytes() == bytes(damaged), "nothing rewritten"


# Inputs that used to escape the exception tree (UnicodeEncodeError, OverflowError,
# TypeError for None): each raises InvalidArgument naming the argument, its value and
# the fix. Each case: the call, then fragments the message must contain.
LONE_SURROGATE = "\ud800"
HUGE = 10**400


def _case(name: str, call: Callable[[Any], object], *fragments: str) -> Any:
    return pytest.param(call, fragments, id=name)


KEY = ("key", r"'\ud800'", "surrogate", "UTF-8")
ESCAPES = [
    _case("limit key", lambda lim: lim.limit(LONE_SURROGATE, rate=1, per="1m"), *KEY),
    _case("check key", lambda lim: lim.check(LONE_SURROGATE), *KEY),
    _case("allow key", lambda lim: lim.allow(LONE_SURROGATE), *KEY),
    _case("reset key", lambda lim: lim.reset(LONE_SURROGATE), *KEY),
    _case("remove key", lambda lim: lim.remove(LONE_SURROGATE), *KEY),
    _case("status key", lambda lim: lim.status(LONE_SURROGATE), *KEY),
    _case("history key", lambda lim: lim.history(LONE_SURROGATE), *KEY),
    _case("check_all str item", lambda lim: lim.check_all([LONE_SURROGATE]), *KEY),
    _case("check_all tuple item", lambda lim: lim.check_all([(LONE_SURROGATE, 1)]), *KEY),
    _case("allow_all dict item", lambda lim: lim.allow_all([{"key": LONE_SURROGATE}]), *KEY),
    _case("check_all key None", lambda lim: lim.check_all([{"key": None}]), "key", "None", "str"),
    _case(
        "check_all huge cost",
        lambda lim: lim.check_all([("k", HUGE)]),
        "cost",
        "1000000000",
        "absurdly large",
        "such as",
    ),
    _case("list prefix", lambda lim: lim.list(LONE_SURROGATE), "prefix", r"'\ud800'", "UTF-8"),
    _case("per huge", lambda lim: lim.limit("k", rate=1, per=HUGE), "per", "10000000", "365d"),
    _case(
        "per huge negative",
        lambda lim: lim.limit("k", rate=1, per=-HUGE),
        "per",
        "-10000000",
        '"k"',
        "positive",
    ),
    _case(
        "per surrogate",
        lambda lim: lim.limit("k", rate=1, per=LONE_SURROGATE),
        "per",
        r"'\ud800'",
        '"k"',
        "UTF-8",
    ),
    _case(
        "algorithm None",
        lambda lim: lim.limit("k", rate=1, per="1m", algorithm=None),
        "algorithm",
        "None",
        '"k"',
        "token_bucket",
    ),
    _case(
        "algorithm surrogate",
        lambda lim: lim.limit("k", rate=1, per="1m", algorithm=LONE_SURROGATE),
        "algorithm",
        r"'\ud800'",
        "token_bucket",
    ),
    _case("history limit -1", lambda lim: lim.history("k", limit=-1), "limit", "-1", "100"),
    _case(
        "history limit huge",
        lambda lim: lim.history("k", limit=HUGE),
        "limit",
        "1000000000",
        "absurdly large",
    ),
    _case("history limit None", lambda lim: lim.history("k", limit=None), "limit", "None", "100"),
    _case("top limit -1", lambda lim: lim.top(limit=-1), "limit", "-1", "20"),
    _case("top limit None", lambda lim: lim.top(limit=None), "limit", "None", "20"),
    _case("top by None", lambda lim: lim.top(by=None), "by", "None", "denied"),
    _case("top by surrogate", lambda lim: lim.top(by=LONE_SURROGATE), "by", r"'\ud800'", "UTF-8"),
    _case("check_all None", lambda lim: lim.check_all(None), "check_all", "None", "list"),
    _case("allow_all None", lambda lim: lim.allow_all(None), "allow_all", "None", "list"),
    _case("check_all int", lambda lim: lim.check_all(5), "check_all", "5", "list"),
]


@pytest.mark.parametrize(("call", "fragments"), ESCAPES)
def test_bad_values_raise_invalid_argument_naming_argument_value_and_fix(
    limiter: flint.Limiter, call: Callable[[Any], object], fragments: tuple[str, ...]
) -> None:
    limiter.limit("k", rate=10, per="1m")
    with pytest.raises(flint.InvalidArgument) as caught:
        call(limiter)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert len(message) < 400, message
    assert limiter.status("k")["remaining"] == 10  # type: ignore[index]


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({"flush_every_ms": -1}, ("flush_every_ms", "-1", "milliseconds")),
        ({"flush_every_ms": HUGE}, ("flush_every_ms", "1000000000", "absurdly large")),
        ({"flush_every_ms": None}, ("flush_every_ms", "None", "such as 100")),
        ({"flush_every_events": -1}, ("flush_every_events", "-1", "such as 100")),
        (
            {"flush_every_events": 2**64},
            (
                "flush_every_events",
                "18446744073709551616",
            ),
        ),
        ({"flush_every_events": 1.5}, ("flush_every_events", "1.5", "float")),
        ({"sync": None}, ("sync", "None", '"always" or "batch"')),
        ({"sync": LONE_SURROGATE}, ("sync", r"'\ud800'", "UTF-8")),
        ({"data_dir": None}, ("data_dir", "None", ".flint")),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v!r}"[:40] for k, v in value.items()) if isinstance(value, dict) else ""
    ),
)
def test_bad_options_raise_invalid_argument(
    tmp_path: Path, options: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    options = {"data_dir": tmp_path / ".flint", **options}
    with pytest.raises(flint.InvalidArgument) as caught:
        flint.Limiter(**options)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not (tmp_path / ".flint").exists(), "a refused open creates nothing"


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        (lambda: flint.ManualClock(start=HUGE), ("start", "1000000000")),
        (lambda: flint.ManualClock(start=1e30), ("start", "1e+30", "2554")),
        (lambda: flint.ManualClock(start=1).advance(HUGE), ("advance", "1000000000")),
        (lambda: flint.ManualClock(start=1).advance(1e30), ("advance", "1e+30")),
        (lambda: flint.ManualClock(start=1).set(HUGE), ("set", "1000000000")),
        (lambda: flint.ManualClock(start=1).set(-1), ("set", "-1", "non-negative")),
    ],
    ids=["start huge int", "start 1e30", "advance huge int", "advance 1e30", "set huge", "set -1"],
)
def test_bad_clock_values_raise_invalid_argument(
    call: Callable[[], object], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(flint.InvalidArgument) as caught:
        call()
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))


async def test_async_methods_refuse_bad_items_the_same_way(limiter: flint.Limiter) -> None:
    limiter.limit("k", rate=10, per="1m")
    with pytest.raises(flint.InvalidArgument, match="None"):
        await limiter.acheck_all(None)  # type: ignore[arg-type]
    # A str is not a list of its characters.
    with pytest.raises(flint.InvalidArgument, match="wrap it in a list"):
        await limiter.aallow_all("k")
    assert await limiter.aallow_all(iter(["k", ("k", 2)]))
    assert limiter.status("k")["remaining"] == 7  # type: ignore[index]


@pytest.mark.parametrize(
    "call",
    [
        lambda lim: lim.limit(["k"], rate=1, per="1m"),
        lambda lim: lim.limit("k", rate=1, per="1m", algorithm=["token_bucket"]),
        lambda lim: lim.top(by=["denied"]),
        lambda lim: lim.list(prefix=5),
        lambda lim: lim.history("k", limit=1.5),
    ],
)
def test_a_wrong_python_type_raises_invalid_argument_or_type_error(
    limiter: flint.Limiter, call: Callable[[Any], object]
) -> None:
    # docs/python.md: TypeError is acceptable only for a wrong Python type.
    with pytest.raises((flint.InvalidArgument, TypeError)):
        call(limiter)


def test_an_empty_data_dir_is_refused_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(flint.InvalidArgument) as caught:
        flint.Limiter("")
    assert "empty" in str(caught.value) and ".flint" in str(caught.value), str(caught.value)
    assert list(tmp_path.iterdir()) == [], "nothing left in the current directory"


def test_an_io_error_names_the_os_error_once(data_dir: Path) -> None:
    (data_dir / "flint.aof").mkdir(parents=True)
    with pytest.raises(flint.StorageError) as caught:
        flint.Limiter(data_dir)
    message = str(caught.value)
    assert message.count(os.strerror(errno.EISDIR)) == 1, message
    assert caught.value.errno == errno.EISDIR


def test_another_programs_log_is_named_as_such_not_as_damage(tmp_path) -> None:
    data_dir = tmp_path / ".flint"
    data_dir.mkdir()
    (data_dir / "flint.aof").write_text('{"key": "api:user-42", "cost": 1}\n')
    with pytest.raises(flint.StorageError) as raised:
        flint.Limiter(data_dir)
    message = str(raised.value)
    assert not isinstance(raised.value, flint.CorruptedData)
    assert "is not a Flint log" in message and "JSON lines" in message, message
    assert "--repair" not in message, message
