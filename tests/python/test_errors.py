"""The exception tree and the messages: each names the key, the value and the fix,
and a rejected call consumes nothing."""

from __future__ import annotations

import datetime
import errno
import os
from pathlib import Path

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
