"""Prometheus metrics of an embedded ``flint.Limiter``.

The shared-mode server serves its metrics at ``GET /metrics``; a limiter embedded in
a web app serves the same metrics, under the same names, from a route of the app::

    import flint
    from flint.prometheus import add_metrics_route

    limiter = flint.Limiter(data_dir=".flint")
    add_metrics_route(app, limiter)  # GET /metrics on a FastAPI or Starlette app

The text is rendered by the Rust engine's binding (one renderer and one list of
names, shared with the server): the engine's totals, the checks since the limiter
was opened by outcome, one series per key template, and, only when asked for with
``per_key``, the top keys by checks, never more than ``per_key`` of them.

Importing this module imports neither Starlette nor FastAPI; ``add_metrics_route``
imports Starlette when it is called. See docs/metrics.md.
"""

from __future__ import annotations

from typing import Any

from flint import Limiter, SharedLimiter, _native
from flint._errors import InvalidArgument

__all__ = ["CONTENT_TYPE", "METRIC_HISTOGRAMS", "METRIC_NAMES", "add_metrics_route", "metrics_text"]

#: Every metric name the server's ``/metrics`` and :func:`metrics_text` expose.
METRIC_NAMES: tuple[str, ...] = _native.METRIC_NAMES
#: The histograms among them (exposed as ``_bucket``, ``_sum`` and ``_count``).
METRIC_HISTOGRAMS: tuple[str, ...] = _native.METRIC_HISTOGRAMS
#: The content type of the text (OpenMetrics, as the server's ``/metrics``).
CONTENT_TYPE: str = _native.METRICS_CONTENT_TYPE


def _check_per_key(per_key: object) -> int | None:
    if per_key is None:
        return None
    if isinstance(per_key, bool) or not isinstance(per_key, int) or per_key < 1:
        raise InvalidArgument(
            f"per_key={per_key!r} is invalid: pass None (no per-key series) or a "
            "positive int, the most keys to show (such as 100)"
        )
    return per_key


def metrics_text(limiter: Limiter, *, per_key: int | None = None) -> str:
    """The Prometheus text (OpenMetrics) of an embedded limiter.

    Args:
        limiter: An open ``flint.Limiter``.
        per_key: ``None`` (the default) for no per-key series; or the most keys to
            show as ``flint_key_checks_total{key=...}`` series, the top ones by
            checks. Each key is a series of its own: keep it small.

    Raises:
        TypeError: ``limiter`` is a ``SharedLimiter`` (scrape its server's
            ``/metrics``) or not a limiter.
        InvalidArgument: ``per_key`` is not ``None`` or a positive int.
        FlintError: The limiter is closed.
    """
    if isinstance(limiter, SharedLimiter):
        raise TypeError(
            "metrics_text() reads an embedded flint.Limiter; a SharedLimiter's server "
            f"already serves these metrics: scrape {limiter.url.rstrip('/')}/metrics"
        )
    if not isinstance(limiter, _native.Limiter):
        raise TypeError(f"metrics_text() takes a flint.Limiter, not {type(limiter).__name__}")
    return _native.metrics_text(limiter, _check_per_key(per_key))


def add_metrics_route(
    app: Any, limiter: Limiter, path: str = "/metrics", *, per_key: int | None = None
) -> None:
    """Serve :func:`metrics_text` of ``limiter`` at ``GET path`` of a FastAPI or
    Starlette app.

    The route renders the text off the event loop (in a worker thread) and leaves out
    of the OpenAPI schema. Protect it as the rest of the app (a Prometheus scrape job
    can send a bearer token), or serve it on an internal port.

    Raises:
        TypeError: ``limiter`` is a ``SharedLimiter`` (its server serves
            ``/metrics``).
        InvalidArgument: ``per_key`` is not ``None`` or a positive int.
        ImportError: Starlette is not installed.
    """
    if isinstance(limiter, SharedLimiter):
        raise TypeError(
            "add_metrics_route() serves an embedded flint.Limiter's metrics; a "
            "SharedLimiter's server already serves them: scrape "
            f"{limiter.url.rstrip('/')}/metrics"
        )
    cap = _check_per_key(per_key)
    try:
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import Response
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            'add_metrics_route() needs Starlette: pip install "flint-limiter[fastapi]"'
        ) from e

    async def metrics(request: Request) -> Response:
        text = await run_in_threadpool(metrics_text, limiter, per_key=cap)
        return Response(text, media_type=CONTENT_TYPE)

    # FastAPI apps take include_in_schema; a Starlette app's add_route takes it too.
    app.add_route(path, metrics, methods=["GET"], include_in_schema=False)
