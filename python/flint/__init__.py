"""Flint: a persistent, exact rate limiter with a Rust engine.

Every decision is recorded in an append-only log inside a data directory before the
call returns, so limits survive crashes and restarts::

    import flint

    limiter = flint.Limiter(data_dir=".flint")
    limiter.limit("api:user-42", rate=100, per="1m")
    if limiter.allow("api:user-42"):
        ...

The engine is the Rust crate ``flint-core``; this package only adds what Python
needs on top of it: async methods, the ``rate_limit`` decorator and the context
manager.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import os
import weakref
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, Callable, Literal, TypeVar

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
    "StorageError",
    "__version__",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

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


class Limiter(_native.Limiter):
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

    def __enter__(self) -> Limiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the decorator -----------------------------------------------------------

    def rate_limit(
        self,
        key: str,
        *,
        rate: int,
        per: Any,
        algorithm: str = "token_bucket",
        cost: int = 1,
    ) -> Callable[[F], F]:
        """Configure a limit now and check it on every call of the decorated function.

        Over the limit the call raises :class:`RateLimitExceeded` and the function does
        not run. Works on functions, methods and ``async def`` functions (the async
        form checks in the event loop's executor and never blocks the loop).
        """
        self.limit(key, rate=rate, per=per, algorithm=algorithm)

        def exceeded(result: CheckResult) -> RateLimitExceeded:
            return RateLimitExceeded(key, result.remaining, result.reset_at, result.retry_after)

        def decorate(function: F) -> F:
            if inspect.iscoroutinefunction(function):

                @functools.wraps(function)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    result = await self.acheck(key, cost=cost)
                    if not result.allowed:
                        raise exceeded(result)
                    return await function(*args, **kwargs)

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = self.check(key, cost=cost)
                if not result.allowed:
                    raise exceeded(result)
                return function(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    # -- async methods: the same operations, run in the loop's default executor -----

    def _in_executor(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, functools.partial(call, *args, **kwargs))

    async def alimit(
        self, key: str, *, rate: int, per: Any, algorithm: str = "token_bucket"
    ) -> str:
        """Async :meth:`limit`."""
        return await self._in_executor(self.limit, key, rate=rate, per=per, algorithm=algorithm)

    async def aallow(self, key: str, *, cost: int = 1) -> bool:
        """Async :meth:`allow`."""
        return await self._in_executor(self.allow, key, cost=cost)

    async def acheck(self, key: str, *, cost: int = 1) -> CheckResult:
        """Async :meth:`check`."""
        return await self._in_executor(self.check, key, cost=cost)

    async def aallow_all(self, items: Iterable[Any]) -> bool:
        """Async :meth:`allow_all`."""
        return await self._in_executor(self.allow_all, _drain(items))

    async def acheck_all(self, items: Iterable[Any]) -> dict[str, Any]:
        """Async :meth:`check_all`."""
        return await self._in_executor(self.check_all, _drain(items))

    async def astatus(self, key: str) -> dict[str, Any] | None:
        """Async :meth:`status`."""
        return await self._in_executor(self.status, key)

    async def alist(self, prefix: str | None = None) -> list[dict[str, Any]]:
        """Async :meth:`list`."""
        return await self._in_executor(self.list, prefix)

    async def areset(self, key: str) -> None:
        """Async :meth:`reset`."""
        await self._in_executor(self.reset, key)

    async def aremove(self, key: str) -> None:
        """Async :meth:`remove`."""
        await self._in_executor(self.remove, key)

    async def ahistory(self, key: str, limit: int = 100) -> list[dict[str, Any]]:
        """Async :meth:`history`."""
        return await self._in_executor(self.history, key, limit)

    async def atop(self, by: str = "denied", limit: int = 20) -> list[dict[str, Any]]:
        """Async :meth:`top`."""
        return await self._in_executor(self.top, by, limit)

    async def adoctor(self) -> dict[str, Any]:
        """Async :meth:`doctor`."""
        return await self._in_executor(self.doctor)

    async def aflush(self) -> None:
        """Async :meth:`flush`."""
        await self._in_executor(self.flush)

    async def acompact(self) -> dict[str, Any]:
        """Async :meth:`compact`."""
        return await self._in_executor(self.compact)
