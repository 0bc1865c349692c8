"""Type stubs of the native part of Flint (``flint._native``), the Rust engine's binding."""

import builtins
from collections.abc import Iterable
from datetime import timedelta
from os import PathLike
from typing import Any, Literal, final

from typing_extensions import Self

__version__: str
__all__ = [
    "METRICS_CONTENT_TYPE",
    "METRIC_HISTOGRAMS",
    "METRIC_NAMES",
    "CheckResult",
    "Limiter",
    "ManualClock",
    "SharedLimiter",
    "__version__",
    "metrics_text",
    "run_cli",
]

_Period = str | int | float | timedelta
_Item = str | dict[str, Any] | tuple[str, int]
_Mode = Literal["enforce", "shadow"]
_ListKind = Literal["all", "keys", "templates"]

@final
class CheckResult:
    """The result of one check: immutable; ``bool(result)`` is ``allowed``."""

    @property
    def allowed(self) -> bool:
        """Whether the request was allowed (and its cost consumed)."""
    @property
    def remaining(self) -> int:
        """Units left after this decision."""
    @property
    def reset_at(self) -> float:
        """Unix seconds at which the key is back to full capacity."""
    @property
    def retry_after(self) -> float:
        """Seconds until a request of this cost would be allowed; 0.0 when allowed."""
    @property
    def limit(self) -> int:
        """The limit's capacity: its burst (the rate unless a token bucket has one)."""
    @property
    def key(self) -> str:
        """The key checked."""
    @property
    def algorithm(self) -> str:
        """The limit's algorithm."""
    @property
    def cost(self) -> int:
        """The cost asked for."""
    @property
    def shadow_denied(self) -> bool:
        """True when a shadow limit allowed a request that it would have denied
        (``allowed`` is True, nothing was consumed)."""
    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
    def __bool__(self) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ManualClock:
    """A clock that moves only when told to, for tests.

    Args:
        start: Unix seconds to start at; now when omitted.
    """

    def __new__(cls, start: float | None = None) -> Self: ...
    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
    def set(self, unix_seconds: float) -> None:
        """Set the clock (it may go backwards; no key gains quota from that)."""
    def now(self) -> float:
        """The clock's time in Unix seconds."""

class Limiter:
    """A persistent rate limiter over one data directory (embedded mode)."""

    def __new__(
        cls,
        data_dir: str | PathLike[str] = ".flint",
        *,
        sync: Literal["always", "batch"] = "always",
        flush_every_ms: int = 100,
        flush_every_events: int = 100,
        clock: ManualClock | None = None,
    ) -> Self: ...
    @property
    def data_dir(self) -> str:
        """The data directory."""
    @property
    def sync(self) -> str:
        """``"always"`` or ``"batch"``."""
    def limit(
        self,
        key: str,
        *,
        rate: int,
        per: _Period,
        algorithm: str = "token_bucket",
        burst: int | None = None,
        mode: _Mode = "enforce",
    ) -> Literal["created", "updated", "unchanged"]:
        """Configure the limit of ``key``: at most ``rate`` units per ``per``.

        A key ending in ``*`` is a template: the limit of every key that starts with
        the text before the ``*`` and has no limit of its own (the longest such prefix
        wins); ``*`` anywhere else is an ordinary character.

        ``mode="shadow"`` allows every check and counts the ones it would have denied
        (``shadow_denied``), consuming nothing for them; ``"enforce"`` (default) denies.

        ``burst`` (``token_bucket`` only) is the capacity, the most units available at
        once, refilled at ``rate`` per ``per``; ``None`` means the rate. Smaller and
        larger bursts are allowed; the other algorithms accept only ``burst == rate``.

        The same settings again write nothing. With the same algorithm, consumed units
        carry over (``remaining = max(0, new_burst - consumed)``); with another
        algorithm the key starts at full capacity.

        Raises:
            InvalidArgument: A bad key, rate, period, algorithm or burst.
        """
    def peek(self, key: str, *, cost: int = 1) -> CheckResult:
        """What :meth:`check` would answer now, consuming and writing nothing.

        Raises:
            LimitNotFound: The key has no limit.
            InvalidArgument: ``cost`` is not between 1 and the rate.
        """
    def check_nowait(self, key: str, *, cost: int = 1) -> CheckResult | None:
        """:meth:`check`, made only if the engine's state lock is free right now.

        Returns ``None`` (nothing decided) when another call holds it. With
        ``sync="always"`` an allowed check still waits for its sync.
        """
    def check(self, key: str, *, cost: int = 1) -> CheckResult:
        """Check ``key`` and consume ``cost`` units when allowed.

        Raises:
            LimitNotFound: The key has no limit.
            InvalidArgument: ``cost`` is not between 1 and the rate.
            StorageError: The decision could not be recorded.
        """
    def allow(self, key: str, *, cost: int = 1) -> bool:
        """Like :meth:`check`, returning only whether it was allowed."""
    def check_all(self, items: Iterable[_Item]) -> dict[str, Any]:
        """Check several keys, all or nothing; duplicate keys are summed.

        Returns:
            ``{"allowed", "denied_key", "results"}``, one result per item in order.
        """
    def allow_all(self, items: Iterable[_Item]) -> bool:
        """Like :meth:`check_all`, returning only whether it was allowed."""
    def reset(self, key: str) -> None:
        """Put ``key`` back to full capacity (counters and history are kept)."""
    def refund(self, key: str, *, cost: int = 1) -> None:
        """Give back ``cost`` units consumed earlier (a request that failed and should
        not count), never beyond full capacity.

        A token bucket gets the units back, capped at its capacity; a fixed window
        counter subtracts them from the current window; a sliding window log removes
        them from its most recent events inside the window, newest first. Counters and
        history are unchanged (they keep what was admitted). Logged and replayed; with
        ``sync="always"`` it returns once on disk. On a key at full capacity it changes
        and writes nothing.

        Raises:
            LimitNotFound: The key has no limit.
            InvalidArgument: ``cost`` is not between 1 and the rate.
        """
    def remove(self, key: str) -> None:
        """Delete the limit of ``key``."""
    def status(self, key: str) -> dict[str, Any] | None:
        """The key's limit, capacity and counters, or None when it has no limit; a key
        that takes its limit from a template names it in ``template``."""
    def list(
        self, prefix: str | None = None, kind: _ListKind = "all"
    ) -> builtins.list[dict[str, Any]]:
        """Status dicts of every limit (whose key starts with ``prefix``), by key:
        keys and templates (``kind="all"``), or only ``"keys"`` or ``"templates"``."""
    def history(self, key: str, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The key's most recent decisions, oldest first."""
    def top(self, by: str = "denied", limit: int = 20) -> builtins.list[dict[str, Any]]:
        """Keys ranked by denied, allowed, denied_cost, allowed_cost, shadow_denied or
        checks."""
    def doctor(self) -> dict[str, Any]:
        """Check the data directory and the engine."""
    def sweep(self) -> int:
        """Drop now every key made from a template that is back at full capacity (the
        background sweep does this over time); returns how many were dropped."""
    def flush(self) -> None:
        """Sync every event written so far to disk."""
    def compact(self) -> dict[str, Any]:
        """Write a snapshot and start a new, short log."""
    def close(self) -> None:
        """Sync and release the data directory; closing twice is fine."""

class SharedLimiter:
    """A client of a Flint server (shared mode) with the methods of ``Limiter``.

    Args:
        url: The server's address, ``http://`` or ``https://``.
        token: The server's bearer token, when it has one.
        timeout: Seconds that each request may take, from connecting to the answer.
    """

    def __new__(cls, url: str, *, token: str | None = None, timeout: float = 10.0) -> Self: ...
    @property
    def url(self) -> str:
        """The server's URL."""
    @property
    def timeout(self) -> float:
        """Seconds that each request may take."""
    def health(self) -> dict[str, Any]:
        """``GET /v1/health`` (needs no token): ``{"ok": True, "version": ...}``."""
    def limit(
        self,
        key: str,
        *,
        rate: int,
        per: _Period,
        algorithm: str = "token_bucket",
        burst: int | None = None,
        mode: _Mode = "enforce",
    ) -> Literal["created", "updated", "unchanged"]:
        """Configure the limit of ``key`` on the server (see ``Limiter.limit``).

        Raises:
            InvalidArgument: A bad key, rate, period, algorithm or burst.
            FlintConnectionError: The server could not be reached or did not answer.
        """
    def peek(self, key: str, *, cost: int = 1) -> CheckResult:
        """What :meth:`check` would answer now, consuming nothing (``POST /v1/peek``).

        Raises:
            LimitNotFound: The key has no limit.
            InvalidArgument: ``cost`` is not between 1 and the rate.
            FlintConnectionError: No answer.
            FlintServerError: The server failed.
            AuthenticationError: The server refused the token.
        """
    def check(self, key: str, *, cost: int = 1) -> CheckResult:
        """Check ``key`` and consume ``cost`` units when allowed; never sent twice.

        Raises:
            LimitNotFound: The key has no limit.
            InvalidArgument: ``cost`` is not between 1 and the rate.
            FlintConnectionError: No answer (the check may or may not have counted).
            FlintServerError: The server failed.
            AuthenticationError: The server refused the token.
        """
    def allow(self, key: str, *, cost: int = 1) -> bool:
        """Like :meth:`check`, returning only whether it was allowed."""
    def check_all(self, items: Iterable[_Item]) -> dict[str, Any]:
        """Check several keys, all or nothing; duplicate keys are summed."""
    def allow_all(self, items: Iterable[_Item]) -> bool:
        """Like :meth:`check_all`, returning only whether it was allowed."""
    def reset(self, key: str) -> None:
        """Put ``key`` back to full capacity."""
    def refund(self, key: str, *, cost: int = 1) -> None:
        """Give back ``cost`` units consumed earlier, never beyond full capacity
        (``POST /v1/refund``; never sent twice). See :meth:`Limiter.refund`.

        Raises:
            LimitNotFound: The key has no limit.
            InvalidArgument: ``cost`` is not between 1 and the rate.
            FlintConnectionError: No answer.
            FlintServerError: The server failed.
            AuthenticationError: The server refused the token.
        """
    def remove(self, key: str) -> None:
        """Delete the limit of ``key``."""
    def status(self, key: str) -> dict[str, Any] | None:
        """The key's limit, capacity and counters, or None when it has no limit; a key
        that takes its limit from a template names it in ``template``."""
    def list(
        self, prefix: str | None = None, kind: _ListKind = "all"
    ) -> builtins.list[dict[str, Any]]:
        """Status dicts of every limit (whose key starts with ``prefix``), by key:
        keys and templates (``kind="all"``), or only ``"keys"`` or ``"templates"``."""
    def history(self, key: str, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The key's most recent decisions, oldest first."""
    def top(self, by: str = "denied", limit: int = 20) -> builtins.list[dict[str, Any]]:
        """Keys ranked by denied, allowed, denied_cost, allowed_cost, shadow_denied or
        checks."""
    def doctor(self) -> dict[str, Any]:
        """Check the server's data directory and engine."""
    def flush(self) -> None:
        """Have the server sync every event written so far."""
    def compact(self) -> dict[str, Any]:
        """Have the server write a snapshot and start a new, short log."""
    def close(self) -> None:
        """Close the connections; later calls raise ``FlintError``."""

def run_cli(argv: list[str]) -> int:
    """Run the ``flint`` command with ``argv`` and return its exit code."""

def metrics_text(limiter: Limiter, per_key: int | None = None) -> str:
    """The Prometheus text (OpenMetrics) of an embedded limiter: its totals, checks
    since open by outcome, one series per template, and the top ``per_key`` keys by
    checks when given."""

METRIC_NAMES: tuple[str, ...]
"""Every metric name that the server's ``/metrics`` and ``metrics_text`` expose."""
METRIC_HISTOGRAMS: tuple[str, ...]
"""The histograms among them (exposed with ``_bucket``, ``_sum`` and ``_count``)."""
METRICS_CONTENT_TYPE: str
"""The content type of that text."""
