"""Flint: a persistent, exact rate limiter with a Rust engine.

Every decision is recorded in an append-only log inside a data directory before the
call returns, so limits survive crashes and restarts::

    import flint

    limiter = flint.Limiter(data_dir=".flint")
    limiter.limit("api:user-42", rate=100, per="1m")
    if limiter.allow("api:user-42"):
        ...

Several processes share limits through a Flint server (``flint server start``) and
``flint.SharedLimiter(url, token=...)``, which has the same methods.

The engine is the Rust crate ``flint-core``; this package only adds what Python
needs on top of it: async methods, the ``rate_limit`` decorator and the context
manager, written once for both classes.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import functools
import inspect
import math
import os
import time
import weakref
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, Callable, Literal, Protocol, TypeVar

from flint import _native
from flint._errors import (
    AuthenticationError,
    CorruptedData,
    DataDirLocked,
    FlintConnectionError,
    FlintError,
    FlintServerError,
    InvalidArgument,
    LimitNotFound,
    RateLimitExceeded,
    StorageError,
)
from flint._native import CheckResult, ManualClock

__version__: str = _native.__version__

__all__ = [
    "AuthenticationError",
    "CheckResult",
    "CorruptedData",
    "DataDirLocked",
    "FlintConnectionError",
    "FlintError",
    "FlintServerError",
    "InvalidArgument",
    "LimitNotFound",
    "Limiter",
    "ManualClock",
    "RateLimitExceeded",
    "SharedLimiter",
    "StorageError",
    "__version__",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
L = TypeVar("L", bound="_LimiterApi")
# The modes of a limit, and the kinds of entries that list() returns.
_Mode = Literal["enforce", "shadow"]
_ListKind = Literal["all", "keys", "templates"]

# Limiters still open, closed at interpreter exit (which syncs and releases the lock).
_OPEN: weakref.WeakSet[Limiter] = weakref.WeakSet()


def _close_all() -> None:
    for limiter in list(_OPEN):
        try:
            limiter.close()
        except FlintError:
            pass  # Nothing useful can be done about it at exit.


atexit.register(_close_all)
# A forked child must not close the parent's limiters at its exit.
os.register_at_fork(after_in_child=_OPEN.clear)


def _drain(items: T) -> T | list[Any]:
    """An iterator's items as a list, read here rather than in the executor's thread;
    anything else (a list, or a value that check_all will refuse, such as None or a
    single key) unchanged."""
    return list(items) if isinstance(items, Iterator) else items


def _in_executor(call: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
    """``call(*args, **kwargs)`` in the running loop's default executor."""
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(None, functools.partial(call, *args, **kwargs))


class _Operations(Protocol):
    """The synchronous methods that both limiters implement natively; the methods of
    :class:`_LimiterApi` are written against these."""

    def limit(
        self,
        key: str,
        *,
        rate: int,
        per: Any,
        algorithm: str = ...,
        burst: int | None = ...,
        mode: _Mode = ...,
    ) -> str: ...
    def check(self, key: str, *, cost: int = ...) -> CheckResult: ...
    def peek(self, key: str, *, cost: int = ...) -> CheckResult: ...
    def allow(self, key: str, *, cost: int = ...) -> bool: ...
    def check_all(self, items: Iterable[Any]) -> dict[str, Any]: ...
    def allow_all(self, items: Iterable[Any]) -> bool: ...
    def reset(self, key: str) -> None: ...
    def refund(self, key: str, *, cost: int = ...) -> None: ...
    def remove(self, key: str) -> None: ...
    def status(self, key: str) -> dict[str, Any] | None: ...
    def list(
        self, prefix: str | None = ..., kind: _ListKind = ...
    ) -> builtins.list[dict[str, Any]]: ...
    def history(self, key: str, limit: int = ...) -> builtins.list[dict[str, Any]]: ...
    def top(self, by: str = ..., limit: int = ...) -> builtins.list[dict[str, Any]]: ...
    def doctor(self) -> dict[str, Any]: ...
    def flush(self) -> None: ...
    def compact(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _wait_limit(key: str, timeout: object) -> float | None:
    """``timeout`` of :meth:`acquire` as seconds (``None``: no limit), or why not."""
    if timeout is None:
        return None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    error = InvalidArgument(
        f"timeout {timeout!r} for key {key!r} is invalid: pass a number of seconds "
        "(0 or more, such as 2.5), or None to wait until the units are granted"
    )
    error.key = key
    raise error


def _acquire(ops: _Operations, key: str, cost: int, timeout: object) -> CheckResult:
    """Waits for ``cost`` units of ``key``: peeks (recording nothing), sleeps the
    ``retry_after`` it names, and checks once the units are there. When the wait would
    outlast ``timeout``, makes the check now, which records the refusal (or, if the
    units came back meanwhile, is allowed)."""
    limit = _wait_limit(key, timeout)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        seen = ops.peek(key, cost=cost)
        if seen.allowed:
            result = ops.check(key, cost=cost)
            if result.allowed:
                return result
            continue  # another caller took the units first: look again
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and seen.retry_after > left:
            return ops.check(key, cost=cost)
        time.sleep(seen.retry_after)


async def _aacquire(ops: _Operations, key: str, cost: int, timeout: object) -> CheckResult:
    """:func:`_acquire` without blocking the loop: the calls run in the executor and
    the waits are ``asyncio.sleep``."""
    limit = _wait_limit(key, timeout)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        seen = await _in_executor(ops.peek, key, cost=cost)
        if seen.allowed:
            result = await _in_executor(ops.check, key, cost=cost)
            if result.allowed:
                return result
            continue
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and seen.retry_after > left:
            return await _in_executor(ops.check, key, cost=cost)
        await asyncio.sleep(seen.retry_after)


class _LimiterApi:
    """What :class:`Limiter` and :class:`SharedLimiter` add in Python to their native
    methods, written once for both: the context manager, the ``rate_limit`` decorator
    and the async methods (each the same operation, run in the event loop's default
    executor, so that it never blocks the loop)."""

    def __enter__(self: L) -> L:
        return self

    def __exit__(self: _Operations, *exc: object) -> None:
        self.close()

    # -- waiting for units ----------------------------------------------------------

    def acquire(
        self: _Operations, key: str, *, cost: int = 1, timeout: float | None = None
    ) -> CheckResult:
        """Wait until ``cost`` units of ``key`` are granted, or ``timeout`` seconds pass.

        Returns the allowed result, or, when the units cannot come in time, the denied
        result of a check made then (it counts one denial). Waits the ``retry_after``
        the limiter names rather than polling; ``timeout=None`` waits as long as it
        takes. A wait longer than what is left of ``timeout`` is not started: the call
        returns the denial at once.
        """
        return _acquire(self, key, cost, timeout)

    async def aacquire(
        self: _Operations, key: str, *, cost: int = 1, timeout: float | None = None
    ) -> CheckResult:
        """Async :meth:`acquire`: sleeps with ``asyncio.sleep``, never blocks the loop."""
        return await _aacquire(self, key, cost, timeout)

    # -- the decorator -----------------------------------------------------------

    def rate_limit(
        self: _Operations,
        key: str,
        *,
        rate: int,
        per: Any,
        algorithm: str = "token_bucket",
        burst: int | None = None,
        mode: _Mode = "enforce",
        cost: int = 1,
        wait: bool | float = False,
    ) -> Callable[[F], F]:
        """Configure a limit now and check it on every call of the decorated function.

        Over the limit the call raises :class:`RateLimitExceeded` and the function does
        not run. With ``wait=True`` the call waits for the units instead (as
        :meth:`acquire`), and with ``wait=seconds`` waits at most that long before
        raising. Works on functions, methods and ``async def`` functions (the async
        form checks in the event loop's executor and sleeps with ``asyncio.sleep``;
        it never blocks the loop).

        With ``mode="shadow"`` the function always runs: a call the limit would have
        refused is only counted (``shadow_denied`` in :meth:`status`), never raised.
        """
        if wait is not False:
            # Refused now, at decoration, rather than at the first call.
            _wait_limit(key, None if wait is True else wait)
        self.limit(key, rate=rate, per=per, algorithm=algorithm, burst=burst, mode=mode)
        ops = self
        timeout = None if wait is True else wait

        def check(key: str, *, cost: int) -> CheckResult:
            if wait is False:
                return ops.check(key, cost=cost)
            return _acquire(ops, key, cost, timeout)

        async def acheck(key: str, *, cost: int) -> CheckResult:
            if wait is False:
                return await _in_executor(ops.check, key, cost=cost)
            return await _aacquire(ops, key, cost, timeout)

        def exceeded(result: CheckResult) -> RateLimitExceeded:
            return RateLimitExceeded(key, result.remaining, result.reset_at, result.retry_after)

        def decorate(function: F) -> F:
            if inspect.iscoroutinefunction(function):

                @functools.wraps(function)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    result = await acheck(key, cost=cost)
                    if not result.allowed:
                        raise exceeded(result)
                    return await function(*args, **kwargs)

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = check(key, cost=cost)
                if not result.allowed:
                    raise exceeded(result)
                return function(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    # -- async methods: the same operations, run in the loop's default executor -----

    async def alimit(
        self: _Operations,
        key: str,
        *,
        rate: int,
        per: Any,
        algorithm: str = "token_bucket",
        burst: int | None = None,
        mode: _Mode = "enforce",
    ) -> str:
        """Async :meth:`limit`."""
        return await _in_executor(
            self.limit, key, rate=rate, per=per, algorithm=algorithm, burst=burst, mode=mode
        )

    async def aallow(self: _Operations, key: str, *, cost: int = 1) -> bool:
        """Async :meth:`allow`."""
        return await _in_executor(self.allow, key, cost=cost)

    async def acheck(self: _Operations, key: str, *, cost: int = 1) -> CheckResult:
        """Async :meth:`check`."""
        return await _in_executor(self.check, key, cost=cost)

    async def apeek(self: _Operations, key: str, *, cost: int = 1) -> CheckResult:
        """Async :meth:`peek`."""
        return await _in_executor(self.peek, key, cost=cost)

    async def aallow_all(self: _Operations, items: Iterable[Any]) -> bool:
        """Async :meth:`allow_all`."""
        return await _in_executor(self.allow_all, _drain(items))

    async def acheck_all(self: _Operations, items: Iterable[Any]) -> dict[str, Any]:
        """Async :meth:`check_all`."""
        return await _in_executor(self.check_all, _drain(items))

    async def astatus(self: _Operations, key: str) -> dict[str, Any] | None:
        """Async :meth:`status`."""
        return await _in_executor(self.status, key)

    async def alist(
        self: _Operations, prefix: str | None = None, kind: _ListKind = "all"
    ) -> list[dict[str, Any]]:
        """Async :meth:`list`."""
        return await _in_executor(self.list, prefix, kind)

    async def areset(self: _Operations, key: str) -> None:
        """Async :meth:`reset`."""
        await _in_executor(self.reset, key)

    async def arefund(self: _Operations, key: str, *, cost: int = 1) -> None:
        """Async :meth:`refund`."""
        await _in_executor(self.refund, key, cost=cost)

    async def aremove(self: _Operations, key: str) -> None:
        """Async :meth:`remove`."""
        await _in_executor(self.remove, key)

    async def ahistory(self: _Operations, key: str, limit: int = 100) -> list[dict[str, Any]]:
        """Async :meth:`history`."""
        return await _in_executor(self.history, key, limit)

    async def atop(self: _Operations, by: str = "denied", limit: int = 20) -> list[dict[str, Any]]:
        """Async :meth:`top`."""
        return await _in_executor(self.top, by, limit)

    async def adoctor(self: _Operations) -> dict[str, Any]:
        """Async :meth:`doctor`."""
        return await _in_executor(self.doctor)

    async def aflush(self: _Operations) -> None:
        """Async :meth:`flush`."""
        await _in_executor(self.flush)

    async def acompact(self: _Operations) -> dict[str, Any]:
        """Async :meth:`compact`."""
        return await _in_executor(self.compact)


class Limiter(_LimiterApi, _native.Limiter):
    """A persistent rate limiter over one data directory (embedded mode).

    Args:
        data_dir: The data directory; created owner-only if missing.
        sync: ``"always"`` (default) syncs every event that consumes quota before the
            call returns; ``"batch"`` syncs every ``flush_every_events`` events or
            ``flush_every_ms`` milliseconds.
        flush_every_ms: The longest an event stays unsynced.
        flush_every_events: In batch mode, sync after this many events.
        clock: A ``flint.ManualClock`` for tests; the wall clock otherwise.

    The limiter is safe to share between threads; every engine call releases the GIL.
    It is also a context manager that closes it.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = ".flint",
        *,
        sync: Literal["always", "batch"] = "always",
        flush_every_ms: int = 100,
        flush_every_events: int = 100,
        clock: ManualClock | None = None,
    ) -> None:
        # The native __new__ has opened the directory with these arguments already.
        _OPEN.add(self)

    async def acheck(self, key: str, *, cost: int = 1) -> CheckResult:
        """Async :meth:`check`.

        With ``sync="batch"`` a check never waits for the disk: it is decided in the
        calling thread when the engine's lock is free (microseconds), and on an
        executor thread otherwise (a compaction capturing the state holds the lock),
        so the event loop waits neither for the disk nor for the lock. With
        ``sync="always"`` it runs on an executor thread, which waits for the sync.
        """
        if self.sync == "batch":
            result = self.check_nowait(key, cost=cost)
            if result is not None:
                return result
        return await _in_executor(self.check, key, cost=cost)


class SharedLimiter(_LimiterApi, _native.SharedLimiter):
    """A client of a Flint server (shared mode), with the methods of :class:`Limiter`
    and the same results and exceptions.

    Start the server with ``flint --data-dir D server start --bind HOST:PORT --token T``;
    then every process that shares its limits uses::

        limiter = flint.SharedLimiter("http://127.0.0.1:7878", token="T")

    Args:
        url: The server's address, ``http://`` or ``https://`` (a path prefix is kept,
            for a server behind a reverse proxy).
        token: The server's bearer token, when it was started with one.
        timeout: Seconds that each request may take, from connecting to the whole
            answer.

    Arguments are checked here as :class:`Limiter` checks them; what only the engine
    can check (a key's length, a cost above the rate, an unknown key) is checked by the
    server, and its error is raised with its message and the URL.

    Failures of the connection raise :class:`FlintConnectionError` (also on a
    timeout), a refused token :class:`AuthenticationError`, a failure of the server
    :class:`FlintServerError`. Nothing that may consume quota is ever sent twice: a
    check whose answer was lost raises :class:`FlintConnectionError` saying that it
    may or may not have been applied. Only reads (``status``, ``list``, ``history``,
    ``top``, ``doctor``) are sent once more when the server closed the connection
    without answering.

    Safe to share between threads (one pool of keep-alive connections; every request
    releases the GIL) and across ``fork()`` (a child makes connections of its own).
    ``close()`` (or ``with``) closes the connections.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        # The native __new__ has checked the arguments and made the client already.
        pass
