"""The exception tree of Flint.

The native module raises these classes (the mapping from engine errors lives in
``crates/flint-py/src/errors.rs``). Several have two bases, so that callers can catch
them either as Flint errors or as the built-in error they resemble.
"""

from __future__ import annotations


class FlintError(Exception):
    """The root of every error Flint raises."""


class LimitNotFound(FlintError, KeyError):
    """The key has no configured limit. Also a ``KeyError``."""

    key: str | None = None

    def __str__(self) -> str:  # KeyError would show the message in quotes.
        return str(self.args[0]) if self.args else ""


class InvalidArgument(FlintError, ValueError):
    """A key, rate, period, algorithm or cost is invalid; nothing was consumed."""

    key: str | None = None


class StorageError(FlintError, OSError):
    """The data directory could not be read or written. Also an ``OSError``."""

    def __str__(self) -> str:  # OSError's own format would drop the message.
        return str(self.args[0]) if self.args else ""


class DataDirLocked(StorageError):
    """Another process holds the data directory (``pid`` when known)."""

    data_dir: str | None = None
    pid: int | None = None


class CorruptedData(StorageError):
    """A damaged record is followed by valid ones; nothing was rewritten."""

    offset: int | None = None


class RateLimitExceeded(FlintError):
    """Raised by ``rate_limit`` when a call is over the limit."""

    def __init__(self, key: str, remaining: int, reset_at: float, retry_after: float) -> None:
        super().__init__(
            f"rate limit exceeded for key {key!r}: {remaining} left, retry in {retry_after:.3f}s"
        )
        self.key = key
        self.remaining = remaining
        self.reset_at = reset_at
        self.retry_after = retry_after


class _ClientError(FlintError):
    """An error of the shared-mode client: ``url`` is the server's, ``status`` the HTTP
    status of its answer and ``code`` its error code, when there was an answer."""

    url: str | None = None
    status: int | None = None
    code: str | None = None


class FlintConnectionError(_ClientError, ConnectionError):
    """The shared-mode server could not be reached, or did not answer in time (client
    only). A check that failed so may or may not have been counted; it is never sent
    twice."""

    def __str__(self) -> str:  # OSError's own format would drop the message.
        return str(self.args[0]) if self.args else ""


class FlintServerError(_ClientError):
    """The shared-mode server failed (client only)."""


class AuthenticationError(_ClientError):
    """The shared-mode server refused the token (client only)."""
