"""flint.fastapi: the ASGI middleware, the per-route dependency and client_ip, driven
through httpx.ASGITransport against real FastAPI and Starlette applications."""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, Response
from server_process import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import flint
from flint.fastapi import FlintRateLimitMiddleware, Limit, RateLimit, client_ip

from conftest import AnyLimiter

LEGACY = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/static/{name}")
    async def static(name: str) -> dict[str, str]:
        return {"name": name}

    return app


def starlette_app() -> Starlette:
    async def root(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", root)])


def client(app: Any, peer: tuple[str, int] = ("127.0.0.1", 5000)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[flint.Limiter]:
    with flint.Limiter(data_dir=tmp_path / ".flint") as limiter:
        yield limiter


# -- the middleware: 429, body, headers ---------------------------------------------


async def test_denied_response_body_and_legacy_headers(any_limiter: AnyLimiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware, limiter=any_limiter, key="ip:{client}", rate=2, per="1h"
    )
    async with client(app) as http:
        first = await http.get("/")
        second = await http.get("/")
        third = await http.get("/")
    assert first.status_code == 200 and first.json() == {"ok": "yes"}
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert second.headers["X-RateLimit-Remaining"] == "0"
    assert third.status_code == 429
    assert third.json() == {"detail": "rate limit exceeded"}
    assert third.headers["content-type"] == "application/json"
    assert third.headers["X-RateLimit-Limit"] == "2"
    assert third.headers["X-RateLimit-Remaining"] == "0"
    # A token bucket of 2 per hour: one unit back every 1800 s, full after 3600 s.
    assert 1790 <= int(third.headers["Retry-After"]) <= 1800
    for response in (first, second, third):
        reset = response.headers["X-RateLimit-Reset"]
        assert reset.isdigit()  # whole seconds
        assert 0 <= int(reset) <= 3600
    assert 3590 <= int(third.headers["X-RateLimit-Reset"])
    assert "RateLimit" not in third.headers and "RateLimit-Policy" not in third.headers
    # The limit was configured once, as a template; the client got its own key.
    templates = [s["key"] for s in any_limiter.list(kind="templates")]
    assert templates == ["ip:*"]
    assert [s["key"] for s in any_limiter.list(kind="keys")] == ["ip:127.0.0.1"]


async def test_ietf_headers(embedded: flint.Limiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=embedded,
        key="ip:{client}",
        rate=2,
        per="1m",
        headers="ietf",
    )
    async with client(app) as http:
        first = await http.get("/")
        await http.get("/")
        denied = await http.get("/")
    assert first.headers["RateLimit-Policy"] == '"ip";q=2;w=60'
    assert first.headers["RateLimit"] in ('"ip";r=1;t=30', '"ip";r=1;t=29')
    assert denied.status_code == 429
    assert denied.headers["RateLimit-Policy"] == '"ip";q=2;w=60'
    rate = denied.headers["RateLimit"]
    assert rate.startswith('"ip";r=0;t=')
    assert 58 <= int(rate.rsplit("=", 1)[1]) <= 60
    assert 1 <= int(denied.headers["Retry-After"]) <= 30
    for response in (first, denied):
        assert not any(name in response.headers for name in LEGACY)


async def test_both_and_none_header_styles(embedded: flint.Limiter) -> None:
    both = starlette_app()
    both.add_middleware(
        FlintRateLimitMiddleware,
        limiter=embedded,
        key="b:{client}",
        rate=1,
        per="1h",
        headers="both",
    )
    none = starlette_app()
    none.add_middleware(
        FlintRateLimitMiddleware,
        limiter=embedded,
        key="n:{client}",
        rate=1,
        per="1h",
        headers="none",
    )
    async with client(both) as http:
        ok = await http.get("/")
        denied = await http.get("/")
    assert ok.text == "hello"
    for response in (ok, denied):
        assert all(name in response.headers for name in LEGACY)
        assert response.headers["RateLimit-Policy"] == '"b";q=1;w=3600'
        assert response.headers["RateLimit"].startswith('"b";r=0;t=')
    async with client(none) as http:
        ok = await http.get("/")
        denied = await http.get("/")
    assert ok.status_code == 200 and denied.status_code == 429
    assert denied.json() == {"detail": "rate limit exceeded"}
    assert "Retry-After" in denied.headers
    for response in (ok, denied):
        assert not any(name in response.headers for name in LEGACY)
        assert "RateLimit" not in response.headers


async def test_retry_after_rounds_a_fractional_wait_up(embedded: flint.Limiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware, limiter=embedded, key="ip:{client}", rate=1, per="1500ms"
    )
    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
        denied = await http.get("/")
    assert denied.status_code == 429
    assert denied.headers["Retry-After"] == "2"  # 1.49... s, rounded up
    assert denied.headers["X-RateLimit-Reset"] == "2"


async def test_retry_after_is_never_zero_while_denied(embedded: flint.Limiter) -> None:
    embedded.limit("tiny", rate=1, per="500ms")
    app = fastapi_app()
    app.add_middleware(FlintRateLimitMiddleware, limiter=embedded, key="tiny")
    async with client(app) as http:
        for _ in range(10):
            denied = await http.get("/")
            if denied.status_code == 429:
                break
    assert denied.status_code == 429
    assert denied.headers["Retry-After"] == "1"  # a wait under a second is still 1 s


async def test_custom_response_body_and_status(embedded: flint.Limiter) -> None:
    app = starlette_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=embedded,
        key="ip:{client}",
        rate=1,
        per="1h",
        response_body={"error": "slow down"},
        response_status=503,
    )
    async with client(app) as http:
        await http.get("/")
        denied = await http.get("/")
    assert denied.status_code == 503
    assert denied.json() == {"error": "slow down"}


# -- templates, keys and costs ------------------------------------------------------


async def test_templates_create_per_client_state_lazily(any_limiter: AnyLimiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware, limiter=any_limiter, key="ip:{client}", rate=3, per="1h"
    )
    assert any_limiter.list() == []  # nothing configured before the first request
    async with client(app, peer=("203.0.113.7", 1)) as a, client(app, ("198.51.100.2", 2)) as b:
        await a.get("/")
        status = any_limiter.status("ip:198.51.100.2")
        assert status is not None and status["last_seen"] is None  # no state yet
        await a.get("/")
        await b.get("/")
    keys = {s["key"]: s["remaining"] for s in any_limiter.list(kind="keys")}
    assert keys == {"ip:203.0.113.7": 1, "ip:198.51.100.2": 2}
    after = any_limiter.status("ip:198.51.100.2")
    assert after is not None and after["template"] == "ip:*" and after["allowed"] == 1


async def test_path_and_method_placeholders(embedded: flint.Limiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=embedded,
        key="route:{method}:{path}:{client}",
        rate=5,
        per="1h",
    )
    async with client(app) as http:
        await http.get("/")
        await http.get("/static/a")
    keys = sorted(s["key"] for s in embedded.list(kind="keys"))
    assert keys == ["route:GET:/:127.0.0.1", "route:GET:/static/a:127.0.0.1"]
    assert [s["key"] for s in embedded.list(kind="templates")] == ["route:*"]


async def test_client_none_is_unknown(embedded: flint.Limiter) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await PlainTextResponse("x")(scope, receive, send)

    middleware = FlintRateLimitMiddleware(
        app, limiter=embedded, key="ip:{client}", rate=5, per="1h"
    )
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "client": None,
        "server": ("test", 80),
        "scheme": "http",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    await middleware(scope, receive, send)
    assert seen == ["/"]
    assert messages[0]["status"] == 200
    assert [s["key"] for s in embedded.list(kind="keys")] == ["ip:unknown"]


async def test_key_func_with_template(embedded: flint.Limiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=embedded,
        key_func=lambda request: "user:" + request.headers.get("x-user", "anon"),
        template="user:*",
        rate=1,
        per="1h",
    )
    async with client(app) as http:
        assert (await http.get("/", headers={"x-user": "ann"})).status_code == 200
        assert (await http.get("/", headers={"x-user": "ann"})).status_code == 429
        assert (await http.get("/", headers={"x-user": "bob"})).status_code == 200
    assert sorted(s["key"] for s in embedded.list(kind="keys")) == ["user:ann", "user:bob"]


def test_configuration_errors(embedded: flint.Limiter) -> None:
    app = starlette_app()
    with pytest.raises(ValueError, match=r"'\{client\}'.*prefix"):
        FlintRateLimitMiddleware(app, limiter=embedded, key="{client}", rate=1, per="1s")
    with pytest.raises(ValueError, match="template="):
        FlintRateLimitMiddleware(app, limiter=embedded, key_func=lambda r: "k", rate=1, per="1s")
    with pytest.raises(ValueError, match="unknown placeholder"):
        FlintRateLimitMiddleware(app, limiter=embedded, key="ip:{user}", rate=1, per="1s")
    with pytest.raises(ValueError, match="on_error"):
        FlintRateLimitMiddleware(app, limiter=embedded, key="k", on_error="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="headers"):
        FlintRateLimitMiddleware(app, limiter=embedded, key="k", headers="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        FlintRateLimitMiddleware(app, limiter=embedded)
    with pytest.raises(ValueError, match="must end with"):
        FlintRateLimitMiddleware(
            app, limiter=embedded, key_func=lambda r: "k", template="k", rate=1, per="1s"
        )
    with pytest.raises(ValueError, match="together"):
        FlintRateLimitMiddleware(app, limiter=embedded, key="k", rate=1)
    with pytest.raises(ValueError, match="cost"):
        FlintRateLimitMiddleware(app, limiter=embedded, key="k", cost=0)
    # Without rate/per nothing is configured: any pattern goes.
    FlintRateLimitMiddleware(app, limiter=embedded, key="{client}")


async def test_a_key_without_placeholders_is_one_shared_limit(embedded: flint.Limiter) -> None:
    app = starlette_app()
    app.add_middleware(FlintRateLimitMiddleware, limiter=embedded, key="global", rate=2, per="1h")
    async with client(app, ("192.0.2.1", 1)) as a, client(app, ("192.0.2.2", 1)) as b:
        assert (await a.get("/")).status_code == 200
        assert (await b.get("/")).status_code == 200
        assert (await a.get("/")).status_code == 429
    assert [s["key"] for s in embedded.list()] == ["global"]


async def test_cost_callable(embedded: flint.Limiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=embedded,
        key="ip:{client}",
        rate=10,
        per="1h",
        cost=lambda request: 4 if request.url.path.startswith("/static/") else 1,
    )
    async with client(app) as http:
        response = await http.get("/static/big")
        assert response.headers["X-RateLimit-Remaining"] == "6"
        response = await http.get("/")
        assert response.headers["X-RateLimit-Remaining"] == "5"
    status = embedded.status("ip:127.0.0.1")
    assert status is not None and status["allowed_cost"] == 5


async def test_exempt_paths_consume_nothing(any_limiter: AnyLimiter) -> None:
    any_limiter.limit("ip:*", rate=5, per="1h")
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=any_limiter,
        key="ip:{client}",
        exempt_paths=["/health", "/static/"],
    )
    async with client(app) as http:
        for path in ("/health", "/static/a.css", "/static/b/c", "/health", "/static/"):
            response = await http.get(path)
            assert response.status_code in (200, 404)
            assert "X-RateLimit-Limit" not in response.headers
        assert any_limiter.list(kind="keys") == []  # no limiter call at all
        # An exact entry is not a prefix; a prefix entry needs its slash.
        await http.get("/health/x")
        await http.get("/static")
        await http.get("/")
    status = any_limiter.status("ip:127.0.0.1")
    assert status is not None and status["allowed"] == 3


async def test_one_limiter_call_per_request(embedded: flint.Limiter) -> None:
    calls: list[str] = []

    class Counting:
        async def acheck(self, key: str, *, cost: int = 1) -> flint.CheckResult:
            calls.append("acheck")
            return await embedded.acheck(key, cost=cost)

        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(embedded, name)

    embedded.limit("ip:*", rate=5, per="1h")
    app = fastapi_app()
    app.add_middleware(FlintRateLimitMiddleware, limiter=Counting(), key="ip:{client}")
    async with client(app) as http:
        for _ in range(3):
            await http.get("/")
    assert calls == ["acheck"] * 3


# -- shadow limits --------------------------------------------------------------------


async def test_shadow_limit_never_denies(any_limiter: AnyLimiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=any_limiter,
        key="ip:{client}",
        rate=1,
        per="1h",
        mode="shadow",
    )
    async with client(app) as http:
        responses = [await http.get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all("Retry-After" not in r.headers for r in responses)
    assert responses[-1].headers["X-RateLimit-Remaining"] == "0"
    status = any_limiter.status("ip:127.0.0.1")
    assert status is not None and status["shadow_denied"] == 2


# -- on_error -------------------------------------------------------------------------


class Broken:
    """A limiter whose every call fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def acheck(self, key: str, *, cost: int = 1) -> flint.CheckResult:
        self.calls += 1
        raise flint.StorageError("disk on fire")

    async def acheck_all(self, items: Any) -> dict[str, Any]:
        self.calls += 1
        raise flint.StorageError("disk on fire")


@pytest.fixture
def fresh_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="flint.fastapi")
    return caplog


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "flint.fastapi"]


async def test_on_error_deny_answers_503_and_logs_once(
    fresh_log: pytest.LogCaptureFixture,
) -> None:
    broken = Broken()
    app = fastapi_app()
    app.add_middleware(FlintRateLimitMiddleware, limiter=broken, key="k")
    async with client(app) as http:
        responses = [await http.get("/") for _ in range(5)]
    assert [r.status_code for r in responses] == [503] * 5
    assert responses[0].json() == {"detail": "rate limiter unavailable"}
    assert broken.calls == 5
    records = warnings_of(fresh_log)
    assert len(records) == 1
    assert "disk on fire" in records[0].getMessage()
    assert records[0].levelno == logging.WARNING


async def test_on_error_allow_passes_requests_through(
    fresh_log: pytest.LogCaptureFixture,
) -> None:
    app = starlette_app()
    app.add_middleware(FlintRateLimitMiddleware, limiter=Broken(), key="k", on_error="allow")
    async with client(app) as http:
        responses = [await http.get("/") for _ in range(3)]
    assert [r.text for r in responses] == ["hello"] * 3
    assert len(warnings_of(fresh_log)) == 1


@pytest.mark.parametrize("on_error, status", [("deny", 503), ("allow", 200)])
async def test_shared_limiter_on_a_dead_port(
    fresh_log: pytest.LogCaptureFixture, on_error: Any, status: int
) -> None:
    dead = flint.SharedLimiter(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=dead,
        key="ip:{client}",
        rate=5,
        per="1m",
        on_error=on_error,
    )
    async with client(app) as http:
        responses = [await http.get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [status] * 3
    if on_error == "deny":
        assert responses[0].json() == {"detail": "rate limiter unavailable"}
    records = warnings_of(fresh_log)
    assert len(records) == 1
    assert "FlintConnectionError" in records[0].getMessage()


async def test_bad_key_func_and_cost_are_errors_not_500s(
    embedded: flint.Limiter, fresh_log: pytest.LogCaptureFixture
) -> None:
    embedded.limit("ip:*", rate=5, per="1h")
    bad_key = fastapi_app()
    bad_key.add_middleware(
        FlintRateLimitMiddleware, limiter=embedded, key_func=lambda request: "bad*"
    )
    too_costly = fastapi_app()
    too_costly.add_middleware(
        FlintRateLimitMiddleware, limiter=embedded, key="ip:{client}", cost=lambda r: 0
    )
    async with client(bad_key) as http:
        response = await http.get("/")
    assert response.status_code == 503
    async with client(too_costly) as http:
        response = await http.get("/")
    assert response.status_code == 503
    messages = [r.getMessage() for r in warnings_of(fresh_log)]
    assert len(messages) == 2
    assert "bad*" in messages[0]


async def test_closed_limiter_is_an_error(tmp_path: Path) -> None:
    limiter = flint.Limiter(data_dir=tmp_path / ".flint")
    app = starlette_app()
    app.add_middleware(
        FlintRateLimitMiddleware, limiter=limiter, key="ip:{client}", rate=5, per="1h"
    )
    async with client(app) as http:
        assert (await http.get("/")).status_code == 200
        limiter.close()
        response = await http.get("/")
    assert response.status_code == 503


# -- pure ASGI: streaming, background tasks, lifespan ------------------------------


async def test_streaming_response_passes_through_with_headers(embedded: flint.Limiter) -> None:
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk{i};".encode()
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="text/plain")

    app.add_middleware(
        FlintRateLimitMiddleware, limiter=embedded, key="ip:{client}", rate=5, per="1h"
    )
    async with client(app) as http:
        async with http.stream("GET", "/stream") as response:
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert body == b"chunk0;chunk1;chunk2;"
    assert response.headers["X-RateLimit-Remaining"] == "4"
    assert response.headers["content-type"].startswith("text/plain")


async def test_background_task_still_runs(embedded: flint.Limiter) -> None:
    done: list[str] = []
    app = FastAPI()

    @app.get("/task")
    async def task(background: BackgroundTasks) -> dict[str, str]:
        background.add_task(done.append, "ran")
        return {"queued": "yes"}

    app.add_middleware(
        FlintRateLimitMiddleware, limiter=embedded, key="ip:{client}", rate=5, per="1h"
    )
    async with client(app) as http:
        response = await http.get("/task")
    assert response.json() == {"queued": "yes"}
    assert response.headers["X-RateLimit-Remaining"] == "4"
    assert done == ["ran"]


async def test_lifespan_and_websocket_scopes_pass_through(embedded: flint.Limiter) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = FlintRateLimitMiddleware(
        app, limiter=embedded, key="ip:{client}", rate=1, per="1h"
    )

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        raise AssertionError("the middleware answered a non-http scope")

    await middleware({"type": "lifespan"}, receive, send)
    await middleware({"type": "websocket", "path": "/ws", "client": None}, receive, send)
    assert seen == ["lifespan", "websocket"]
    assert embedded.list() == []  # not even configured


# -- the per-route dependency ---------------------------------------------------------


async def test_route_dependency_denies_with_the_same_body_and_headers(
    any_limiter: AnyLimiter,
) -> None:
    app = FastAPI()
    limit = RateLimit(any_limiter, key="user:{client}", rate=2, per="1h", headers="both")

    @app.get("/limited", dependencies=[Depends(limit)])
    async def limited() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/free")
    async def free() -> dict[str, str]:
        return {"ok": "yes"}

    async with client(app) as http:
        ok = await http.get("/limited")
        await http.get("/limited")
        denied = await http.get("/limited")
        free_response = await http.get("/free")
    assert ok.status_code == 200 and ok.json() == {"ok": "yes"}
    assert ok.headers["X-RateLimit-Limit"] == "2"
    assert ok.headers["X-RateLimit-Remaining"] == "1"
    assert ok.headers["RateLimit-Policy"] == '"user";q=2;w=3600'
    assert denied.status_code == 429
    assert denied.json() == {"detail": "rate limit exceeded"}
    assert denied.headers["X-RateLimit-Remaining"] == "0"
    assert 1790 <= int(denied.headers["Retry-After"]) <= 1800
    assert denied.headers["RateLimit"].startswith('"user";r=0;t=')
    assert free_response.status_code == 200 and "X-RateLimit-Limit" not in free_response.headers


async def test_route_dependency_with_two_limits_is_atomic(any_limiter: AnyLimiter) -> None:
    app = FastAPI()
    limit = RateLimit(
        any_limiter,
        Limit(key="client:{client}", rate=2, per="1h"),
        Limit(key="org:{route}", rate=3, per="1h"),
        headers="ietf",
    )

    @app.get("/items/{item_id}")
    async def item(item_id: int, _: None = Depends(limit)) -> dict[str, int]:
        return {"item": item_id}

    async with client(app, ("192.0.2.1", 1)) as a, client(app, ("192.0.2.2", 2)) as b:
        assert (await a.get("/items/1")).status_code == 200
        ok = await a.get("/items/2")
        assert ok.json() == {"item": 2}
        assert ok.headers["RateLimit-Policy"] == '"client";q=2;w=3600, "org";q=3;w=3600'
        assert ok.headers["RateLimit"].startswith('"client";r=0;t=')
        assert '"org";r=1;t=' in ok.headers["RateLimit"]
        # Denied by the client limit: the org limit gives nothing away.
        for _ in range(3):
            assert (await a.get("/items/3")).status_code == 429
        org = any_limiter.status("org:/items/{item_id}")
        assert org is not None and org["remaining"] == 1 and org["allowed"] == 2
        # Another client can still take the org's last unit, then the org denies.
        assert (await b.get("/items/4")).status_code == 200
        denied = await b.get("/items/5")
        assert denied.status_code == 429
    other = any_limiter.status("client:192.0.2.2")
    assert other is not None and other["remaining"] == 1  # not consumed by the denial


async def test_route_dependency_on_error(fresh_log: pytest.LogCaptureFixture) -> None:
    app = FastAPI()

    @app.get("/deny", dependencies=[Depends(RateLimit(Broken(), key="k"))])
    async def deny() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/allow", dependencies=[Depends(RateLimit(Broken(), key="k", on_error="allow"))])
    async def allow() -> dict[str, str]:
        return {"ok": "yes"}

    async with client(app) as http:
        denied = await http.get("/deny")
        allowed = await http.get("/allow")
    assert denied.status_code == 503
    assert denied.json() == {"detail": "rate limiter unavailable"}
    assert allowed.status_code == 200
    assert len(warnings_of(fresh_log)) == 2  # one per dependency


async def test_route_dependency_shadow_and_cost(embedded: flint.Limiter) -> None:
    app = FastAPI()
    limit = RateLimit(
        embedded, key="sh:{client}", rate=2, per="1h", mode="shadow", cost=lambda r: 2
    )

    @app.get("/", dependencies=[Depends(limit)])
    async def root(response: Response) -> dict[str, str]:
        return {"ok": "yes"}

    async with client(app) as http:
        statuses = [(await http.get("/")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    status = embedded.status("sh:127.0.0.1")
    assert status is not None and status["shadow_denied"] == 2


# -- client_ip ------------------------------------------------------------------------


def conn(peer: str | None, headers: dict[str, str] | list[tuple[str, str]]) -> Request:
    items = headers.items() if isinstance(headers, dict) else headers
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(k.lower().encode(), v.encode()) for k, v in items],
            "client": None if peer is None else (peer, 1234),
        }
    )


TRUSTED = client_ip(trusted_proxies=["10.0.0.0/8", "127.0.0.1/32", "2001:db8:ffff::/48"])


def test_client_ip_without_proxy_headers() -> None:
    assert TRUSTED(conn("203.0.113.9", {})) == "203.0.113.9"
    assert TRUSTED(conn("10.1.2.3", {})) == "10.1.2.3"
    assert TRUSTED(conn(None, {"X-Forwarded-For": "1.2.3.4"})) == "unknown"


def test_client_ip_ignores_headers_from_untrusted_peers() -> None:
    spoof = {"X-Forwarded-For": "1.1.1.1", "Forwarded": "for=2.2.2.2"}
    assert TRUSTED(conn("203.0.113.9", spoof)) == "203.0.113.9"
    assert client_ip()(conn("10.0.0.1", spoof)) == "10.0.0.1"  # nothing trusted


def test_client_ip_walks_the_chain_from_the_right() -> None:
    # client -> untrusted hop (may lie about what is left of it) -> our proxies.
    headers = {"X-Forwarded-For": "6.6.6.6, 198.51.100.1, 10.0.0.2"}
    assert TRUSTED(conn("10.0.0.1", headers)) == "198.51.100.1"
    headers = {"X-Forwarded-For": "198.51.100.1, 10.0.0.3, 10.0.0.2"}
    assert TRUSTED(conn("127.0.0.1", headers)) == "198.51.100.1"
    # Several header lines are one list.
    lines = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "10.0.0.2")]
    assert TRUSTED(conn("10.0.0.1", lines)) == "198.51.100.1"
    # Every hop trusted: the leftmost.
    assert TRUSTED(conn("10.0.0.1", {"X-Forwarded-For": "10.9.9.9, 10.0.0.2"})) == "10.9.9.9"
    # A spoofed value prepended by the client itself is left of the real one.
    headers = {"X-Forwarded-For": "1.2.3.4, 203.0.113.50"}
    assert TRUSTED(conn("10.0.0.1", headers)) == "203.0.113.50"


FORWARDED = client_ip(
    trusted_proxies=["10.0.0.0/8", "127.0.0.1/32", "2001:db8:ffff::/48"], header="forwarded"
)


def test_client_ip_reads_forwarded() -> None:
    headers = {"Forwarded": 'for=192.0.2.60;proto=http;by=203.0.113.43, for="10.0.0.7:8080"'}
    assert FORWARDED(conn("10.0.0.1", headers)) == "192.0.2.60"
    headers = {"Forwarded": 'For="[2001:db8:cafe::17]:4711"'}
    assert FORWARDED(conn("10.0.0.1", headers)) == "2001:db8:cafe::17"
    headers = {"Forwarded": 'for="[2001:db8:cafe::17]", for="[2001:db8:ffff::1]"'}
    assert FORWARDED(conn("2001:db8:ffff::2", headers)) == "2001:db8:cafe::17"
    # Only the chosen header is read: a proxy passes on what a client put in the other.
    both = {"Forwarded": "for=192.0.2.1", "X-Forwarded-For": "192.0.2.2"}
    assert FORWARDED(conn("127.0.0.1", both)) == "192.0.2.1"
    assert TRUSTED(conn("127.0.0.1", both)) == "192.0.2.2"
    # A proxy that cannot name the client: "unknown", never a trusted address.
    assert FORWARDED(conn("10.0.0.1", {"Forwarded": "for=unknown"})) == "unknown"
    assert FORWARDED(conn("10.0.0.1", {"Forwarded": "for=_hidden, for=10.0.0.5"})) == "unknown"
    # X-Forwarded-For with a port, and a client's trailing comma.
    assert TRUSTED(conn("10.0.0.1", {"X-Forwarded-For": "192.0.2.9:5555"})) == "192.0.2.9"
    assert TRUSTED(conn("10.0.0.1", {"X-Forwarded-For": "192.0.2.9,"})) == "192.0.2.9"


def test_a_client_cannot_swallow_what_the_proxy_appended() -> None:
    # An open quote must not join the proxy's element to the client's.
    spoof = {"Forwarded": 'for="[9.9.9.9], for=1.2.3.4'}
    assert FORWARDED(conn("10.0.0.1", spoof)) == "1.2.3.4"
    # Brackets hold an IPv6 address, followed by nothing or a port.
    assert FORWARDED(conn("10.0.0.1", {"Forwarded": 'for="[9.9.9.9]"'})) == "unknown"
    tail = {"Forwarded": 'for="[2001:db8::1]junk"'}
    assert FORWARDED(conn("10.0.0.1", tail)) == "unknown"
    # Behind a proxy that appends to X-Forwarded-For, a client's Forwarded is ignored.
    both = {"Forwarded": "for=9.9.9.9", "X-Forwarded-For": "1.2.3.4"}
    assert TRUSTED(conn("10.0.0.1", both)) == "1.2.3.4"


def test_client_ip_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match=r"proxy\.local.*not host names"):
        client_ip(["proxy.local"])
    with pytest.raises(ValueError, match="x-real-ip"):
        client_ip(["10.0.0.0/8"], header="x-real-ip")


async def test_client_ip_defines_client_in_the_middleware(embedded: flint.Limiter) -> None:
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware,
        limiter=embedded,
        key="ip:{client}",
        client=client_ip(trusted_proxies=["127.0.0.1/32"]),
        rate=5,
        per="1h",
    )
    async with client(app) as proxied, client(app, ("203.0.113.5", 9)) as direct:
        await proxied.get("/", headers={"X-Forwarded-For": "198.51.100.77"})
        await direct.get("/", headers={"X-Forwarded-For": "198.51.100.78"})  # spoofed
    keys = sorted(s["key"] for s in embedded.list(kind="keys"))
    assert keys == ["ip:198.51.100.77", "ip:203.0.113.5"]


# -- imports and the example ----------------------------------------------------------


def test_import_flint_does_not_import_fastapi() -> None:
    code = (
        "import sys, flint\nassert 'fastapi' not in sys.modules and 'starlette' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_import_without_starlette_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "try:\n    import flint.fastapi\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    assert 'pip install "flint-limiter[fastapi]"' in out.stdout


def test_retry_after_seconds() -> None:
    from flint.fastapi import retry_after_seconds

    class Result:
        def __init__(self, wait: float) -> None:
            self.retry_after = wait

    cases = {0.0: 1, 0.001: 1, 1.0: 1, 1.0000001: 2, 1.4: 2, 59.99: 60}
    for wait, expected in cases.items():
        assert retry_after_seconds(Result(wait)) == expected  # type: ignore[arg-type]
    assert math.ceil(1.5) == 2


def test_loop_is_not_blocked_by_the_check() -> None:
    """The check runs in the executor: a slow limiter does not stop other tasks."""

    class Slow:
        async def acheck(self, key: str, *, cost: int = 1) -> Any:
            await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.2)
            raise flint.FlintConnectionError("slow and down")

    async def main() -> int:
        ticks = 0
        app = starlette_app()
        app.add_middleware(FlintRateLimitMiddleware, limiter=Slow(), key="k", on_error="allow")

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        async with client(app) as http:
            assert (await http.get("/")).status_code == 200
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 5


async def test_example_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/fastapi_app.py as written, through ASGITransport (its .flint/ in a
    temporary directory)."""
    import importlib.util

    monkeypatch.chdir(tmp_path)
    path = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"
    spec = importlib.util.spec_from_file_location("fastapi_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        async with client(module.app) as http:
            root = await http.get("/")
            assert root.json() == {"hello": "world"}
            assert root.headers["X-RateLimit-Limit"] == "100"
            assert root.headers["RateLimit-Policy"] == '"ip";q=100;w=60'
            health = await http.get("/health")
            assert health.status_code == 200 and "X-RateLimit-Limit" not in health.headers
            searches = [await http.get("/search", params={"q": "x"}) for _ in range(6)]
            assert [r.status_code for r in searches] == [200] * 5 + [429]
            assert searches[0].headers["RateLimit-Policy"] == (
                '"search";q=5;w=10, "search-all";q=50;w=10'
            )
            assert searches[-1].json() == {"detail": "rate limit exceeded"}
            assert searches[-1].headers["Retry-After"] == "2"
            # The route's own headers win over the middleware's.
            assert searches[-1].headers["X-RateLimit-Limit"] == "5"
            assert searches[0].headers["X-RateLimit-Remaining"] == "4"
    finally:
        module.limiter.close()
    assert (tmp_path / ".flint").is_dir()


async def test_the_docs_middleware_snippet_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    docs = (Path(__file__).resolve().parents[2] / "docs" / "fastapi.md").read_text()
    code = re.search(r"```python\n(.*?)```", docs.split("## The middleware", 1)[1], re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    try:
        async with client(namespace["app"]) as http:
            response = await http.get("/health")  # exempt, and not a route: 404
            assert response.status_code == 404 and "X-RateLimit-Limit" not in response.headers
            response = await http.get("/")
            assert response.headers["X-RateLimit-Limit"] == "100"
    finally:
        namespace["limiter"].close()


def test_two_limits_of_one_route_cannot_share_a_template(embedded: flint.Limiter) -> None:
    with pytest.raises(ValueError, match="same template 's:\\*'"):
        RateLimit(
            embedded,
            Limit(key="s:{client}", rate=2, per="10s"),
            Limit(key="s:{route}", rate=50, per="10s"),
        )


async def test_a_template_replaced_by_another_setup_is_logged(
    embedded: flint.Limiter, caplog: pytest.LogCaptureFixture
) -> None:
    embedded.limit("ip:*", rate=3, per="1m")
    app = fastapi_app()
    app.add_middleware(
        FlintRateLimitMiddleware, limiter=embedded, key="ip:{client}", rate=100, per="1m"
    )
    with caplog.at_level("WARNING", logger="flint.fastapi"):
        async with client(app) as http:
            assert (await http.get("/")).status_code == 200
    assert "'ip:*' had other settings" in caplog.text
