"""Rate limits for FastAPI and Starlette applications.

* :class:`FlintRateLimitMiddleware`: a pure ASGI middleware that checks every HTTP
  request (one ``acheck`` per request, never blocking the event loop) and answers 429
  over the limit, with ``X-RateLimit-*`` and/or IETF ``RateLimit`` headers.
* :class:`RateLimit` and :class:`Limit`: a FastAPI dependency for per-route limits;
  several limits of one route are checked atomically with one ``acheck_all``.
* :func:`client_ip`: the client's address behind trusted reverse proxies
  (``Forwarded`` / ``X-Forwarded-For``).

Works with :class:`flint.Limiter` and :class:`flint.SharedLimiter`. Needs Starlette
(and FastAPI for the dependency): ``pip install "flint-limiter[fastapi]"``.
See docs/fastapi.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import re
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Union

try:
    from starlette.datastructures import MutableHeaders
    from starlette.exceptions import HTTPException
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import JSONResponse, Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "flint.fastapi needs Starlette (and FastAPI for the per-route dependency): "
        'pip install "flint-limiter[fastapi]"'
    ) from error

if TYPE_CHECKING:
    from flint import CheckResult, Limiter, SharedLimiter

    AnyLimiter = Union[Limiter, SharedLimiter]
else:
    AnyLimiter = Any

__all__ = [
    "FlintRateLimitMiddleware",
    "Limit",
    "RateLimit",
    "client_ip",
]

logger = logging.getLogger("flint.fastapi")

HeaderStyle = Literal["legacy", "ietf", "both", "none"]
OnError = Literal["deny", "allow"]
KeyFunc = Callable[[Request], str]
Cost = Union[int, Callable[[Request], int]]

_STYLES = ("legacy", "ietf", "both", "none")
_ON_ERROR = ("deny", "allow")
_MIDDLEWARE_FIELDS = frozenset({"client", "path", "method"})
_ROUTE_FIELDS = frozenset({"client", "path", "method", "route"})
DEFAULT_BODY: dict[str, Any] = {"detail": "rate limit exceeded"}
UNAVAILABLE_BODY: dict[str, Any] = {"detail": "rate limiter unavailable"}
#: At most one warning per this many seconds while the limiter keeps failing.
ERROR_LOG_INTERVAL = 10.0


# -- client identity ------------------------------------------------------------------


def _peer(conn: HTTPConnection) -> str:
    client = conn.client
    return "unknown" if client is None or not client.host else client.host


_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _parse_address(text: str) -> _Address | None:
    """An address from a ``Forwarded`` ``for=`` value or an ``X-Forwarded-For`` entry:
    quotes, IPv6 brackets and ports removed; None when it is not an address."""
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        # Only an IPv6 address goes in brackets, followed by nothing or a port.
        end = value.find("]")
        rest = value[end + 1 :] if end >= 0 else ""
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        value = value[1:end]
        if ":" not in value:
            return None
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _split_quoted(text: str, separator: str) -> list[str] | None:
    """``text`` split at ``separator`` outside double quotes; None when a quote is
    left open (a client's malformed value must not swallow what a proxy appended)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        return None
    parts.append("".join(current))
    return parts


def _forwarded_chain(conn: HTTPConnection, header: str) -> list[str] | None:
    """The addresses of the one header the proxies append to, left (client) to right
    (nearest proxy): the ``for=`` values of ``Forwarded`` (RFC 7239) or the entries of
    ``X-Forwarded-For``; None without it. The other header is never read: a proxy
    passes on whatever the client sent in it."""
    if header == "forwarded":
        forwarded = ",".join(conn.headers.getlist("forwarded"))
        if not forwarded:
            return None
        # A quote left open by the client: split plainly, so that the elements the
        # proxies appended stay whole on the right.
        elements = _split_quoted(forwarded, ",") or forwarded.split(",")
        chain = []
        for element in elements:
            value = ""
            for pair in _split_quoted(element, ";") or element.split(";"):
                name, _, found = pair.partition("=")
                if name.strip().lower() == "for":
                    value = found.strip()
            chain.append(value)
        return chain
    xff = ",".join(conn.headers.getlist("x-forwarded-for"))
    if not xff:
        return None
    # Empty entries (a client's trailing comma) name nobody.
    return [entry.strip() for entry in xff.split(",") if entry.strip()]


class _ClientIp:
    def __init__(self, trusted_proxies: Iterable[str], header: str) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [trusted_proxies]
        networks = []
        for cidr in trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies entry {cidr!r} is not an address or a network: give "
                    'CIDRs or addresses such as "10.0.0.0/8" or "127.0.0.1", not host names'
                ) from None
        self.networks: tuple[_Network, ...] = tuple(networks)
        header = header.lower()
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(
                f'header {header!r} is unknown: use "x-forwarded-for" (the default) or '
                '"forwarded", the one header your proxies append the client\'s address to'
            )
        self.header = header

    def _trusted(self, address: _Address) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)

    def __call__(self, conn: HTTPConnection) -> str:
        peer = _peer(conn)
        address = _parse_address(peer)
        if address is None or not self._trusted(address):
            return peer  # an untrusted peer's headers are ignored
        chain = _forwarded_chain(conn, self.header)
        if not chain:
            return str(address)
        for entry in reversed(chain):
            hop = _parse_address(entry)
            if hop is None:
                # A trusted proxy could not name the address it saw ("unknown", an
                # obfuscated identifier): nothing to the left of it can be trusted.
                return "unknown"
            if not self._trusted(hop):
                return str(hop)
            address = hop
        return str(address)  # every hop is trusted: the leftmost one is the client


def client_ip(
    trusted_proxies: Iterable[str] = (), *, header: str = "x-forwarded-for"
) -> Callable[[HTTPConnection], str]:
    """A function of a request that returns the client's address.

    ``header`` is the one header your proxies append the client's address to:
    ``"x-forwarded-for"`` (the default; nginx's ``$proxy_add_x_forwarded_for``) or
    ``"forwarded"`` (RFC 7239 ``for=``); the other is never read, since a proxy passes
    on whatever a client put in it. It is read only when the direct peer is in one of
    ``trusted_proxies`` (CIDRs such as
    ``"10.0.0.0/8"`` or single addresses): the chain is walked from the right and the
    first address outside the trusted networks is the client. Headers sent by an
    untrusted peer are ignored (its own address is returned), so a client cannot
    choose its key by sending them. ``request.client is None`` gives ``"unknown"``.

    Pass it as ``client=`` to :class:`FlintRateLimitMiddleware` or :class:`RateLimit`
    to define ``{client}``, or call it in a ``key_func``.
    """
    return _ClientIp(trusted_proxies, header)


# -- keys and templates ------------------------------------------------------------


def _fields(key: str, allowed: frozenset[str]) -> tuple[str, bool]:
    """The literal text of ``key`` before its first placeholder, and whether it has
    any; ValueError for an unknown or malformed placeholder."""
    prefix: str | None = None
    try:
        parsed = list(string.Formatter().parse(key))
    except ValueError as error:
        raise ValueError(f"key {key!r} is not a valid key pattern: {error}") from None
    literal = ""
    for text, field, spec, conversion in parsed:
        if field is None:
            literal += text
            continue
        if field not in allowed or spec or conversion:
            names = ", ".join("{" + name + "}" for name in sorted(allowed))
            raise ValueError(f"key {key!r}: unknown placeholder {{{field}}}; use {names}")
        if prefix is None:
            prefix = literal + text
        literal += text
    return (literal if prefix is None else prefix), prefix is not None


def _policy_name(key: str) -> str:
    """A name for the IETF policy: the key's fixed text, sanitised."""
    name = key[:-1] if key.endswith("*") else key
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rstrip(":/_-")).strip("_")
    return name or "default"


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is unknown: use one of {', '.join(choices)}")


@dataclass
class _Spec:
    """One limit: how to make its key, and how to configure it if asked to."""

    key: str | None
    key_func: Callable[[Request], str] | None
    template: str | None  # what limit() configures; None: nothing to configure
    rate: int | None
    per: Any
    algorithm: str
    burst: int | None
    mode: str
    cost: Cost
    policy: str
    window: int | None = None  # seconds, for the IETF headers; found at setup

    @classmethod
    def make(
        cls,
        *,
        key: str | None,
        key_func: Callable[[Request], str] | None,
        template: str | None,
        rate: int | None,
        per: Any,
        algorithm: str,
        burst: int | None,
        mode: str,
        cost: Cost,
        fields: frozenset[str],
    ) -> _Spec:
        if (key is None) == (key_func is None):
            raise ValueError("pass exactly one of key= (a pattern) and key_func=")
        if (rate is None) != (per is None):
            raise ValueError("pass rate= and per= together (or neither)")
        if not callable(cost) and (not isinstance(cost, int) or isinstance(cost, bool) or cost < 1):
            raise ValueError(f"cost={cost!r}: pass an int of 1 or more, or a callable")
        configure: str | None = None
        if key is not None:
            prefix, has_fields = _fields(key, fields)
            if not has_fields:
                configure = prefix  # the key itself ("{{" unescaped, as format() does)
            elif template is not None:
                configure = template
            elif not prefix and rate is not None:
                raise ValueError(
                    f"key {key!r} has no fixed text before its first placeholder, so it "
                    "cannot be configured as one key template: start it with a prefix "
                    'such as "ip:{client}" (template "ip:*"), or pass template="..."'
                )
            else:
                configure = prefix + "*"
        else:
            configure = template
            if rate is not None and template is None:
                raise ValueError(
                    'key_func with rate/per needs template="prefix:*": the key template '
                    "that covers every key the function returns"
                )
        if template is not None and not template.endswith("*"):
            raise ValueError(f"template={template!r} must end with '*' (a key template)")
        policy = _policy_name(configure if configure is not None else (key or "default"))
        return cls(
            key=key,
            key_func=key_func,
            template=configure if rate is not None else None,
            rate=rate,
            per=per,
            algorithm=algorithm,
            burst=burst,
            mode=mode,
            cost=cost,
            policy=policy,
            window=None,
        )

    def key_of(self, request: Request, client: Callable[[HTTPConnection], str]) -> str:
        if self.key_func is not None:
            key = self.key_func(request)
            if not isinstance(key, str):
                raise TypeError(f"key_func returned {key!r}, not a str")
            return key
        assert self.key is not None
        scope = request.scope
        path = scope["path"]
        return self.key.format(
            client=client(request),
            path=path,
            method=scope["method"],
            route=getattr(scope.get("route"), "path", path),
        )

    def cost_of(self, request: Request) -> int:
        cost = self.cost(request) if callable(self.cost) else self.cost
        if not isinstance(cost, int) or isinstance(cost, bool):
            raise TypeError(f"cost callable returned {cost!r}, not an int")
        return cost

    async def setup(self, limiter: AnyLimiter, first_key: str, want_window: bool) -> None:
        """Configures the limit (when rate/per were given) and, for the IETF headers,
        reads its period once."""
        if self.template is not None:
            change = await limiter.alimit(
                self.template,
                rate=self.rate,  # type: ignore[arg-type]
                per=self.per,
                algorithm=self.algorithm,
                burst=self.burst,
                mode=self.mode,  # type: ignore[arg-type]
            )
            if change == "updated":
                # Legitimate after a change of settings between runs; a mistake when
                # the middleware and a route (or two routes) share a prefix.
                logger.warning(
                    "flint: template %r had other settings, now replaced by rate=%s per=%s "
                    "(if another middleware or route configures it too, give each its own "
                    "key prefix: the last to start wins)",
                    self.template,
                    self.rate,
                    self.per,
                )
        if want_window and self.window is None:
            status = await limiter.astatus(self.template or first_key)
            if status is not None:
                self.window = max(1, math.ceil(status["per_ms"] / 1000))


class _ErrorLog:
    """One warning per burst of limiter failures (at most one per interval)."""

    def __init__(self, interval: float = ERROR_LOG_INTERVAL) -> None:
        self.interval = interval
        self.last = -math.inf
        self.suppressed = 0

    def report(self, error: BaseException, on_error: str) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        action = "allowing" if on_error == "allow" else "denying with 503"
        more = (
            f" ({self.suppressed} more failures since the last warning)" if self.suppressed else ""
        )
        logger.warning(
            "rate limiter failed, %s requests: %s: %s%s",
            action,
            type(error).__name__,
            error,
            more,
        )
        self.last = now
        self.suppressed = 0


# -- headers --------------------------------------------------------------------------


def _seconds_until(moment: float, now: float) -> int:
    return max(0, math.ceil(moment - now - 1e-9))


def retry_after_seconds(result: CheckResult | _Result) -> int:
    """``Retry-After`` for a denied result: whole seconds rounded up, at least 1."""
    return max(1, math.ceil(result.retry_after - 1e-9))


@dataclass(frozen=True)
class _Result:
    """The fields of a check result that the headers use (``check_all`` gives dicts)."""

    allowed: bool
    remaining: int
    reset_at: float
    retry_after: float
    limit: int

    @classmethod
    def of(cls, result: CheckResult | dict[str, Any], denied: bool | None = None) -> _Result:
        if isinstance(result, dict):
            allowed = result["allowed"] if denied is None else not denied
            return cls(
                allowed,
                int(result["remaining"]),
                float(result["reset_at"]),
                float(result["retry_after"]),
                int(result["limit"]),
            )
        return cls(
            result.allowed, result.remaining, result.reset_at, result.retry_after, result.limit
        )


def _rate_headers(pairs: Sequence[tuple[_Spec, _Result]], style: str, now: float) -> dict[str, str]:
    headers: dict[str, str] = {}
    if not pairs:
        return headers
    if style in ("legacy", "both"):
        # Several limits: the one closest to denying (the denied one when denied).
        denied = [pair for pair in pairs if not pair[1].allowed]
        _, result = denied[0] if denied else min(pairs, key=lambda pair: pair[1].remaining)
        headers["X-RateLimit-Limit"] = str(result.limit)
        headers["X-RateLimit-Remaining"] = str(result.remaining)
        headers["X-RateLimit-Reset"] = str(_seconds_until(result.reset_at, now))
    if style in ("ietf", "both"):
        policies, states = [], []
        for spec, result in pairs:
            window = f";w={spec.window}" if spec.window is not None else ""
            policies.append(f'"{spec.policy}";q={result.limit}{window}')
            states.append(
                f'"{spec.policy}";r={result.remaining};t={_seconds_until(result.reset_at, now)}'
            )
        headers["RateLimit-Policy"] = ", ".join(policies)
        headers["RateLimit"] = ", ".join(states)
    return headers


# -- the middleware -------------------------------------------------------------------


class FlintRateLimitMiddleware:
    """Rate-limits every HTTP request of a FastAPI or Starlette application.

    ``app.add_middleware(FlintRateLimitMiddleware, limiter=limiter, key="ip:{client}",
    rate=100, per="1m")``: one ``await limiter.acheck(key, cost=cost)`` per request
    (it never blocks the loop: see :meth:`flint.Limiter.acheck`); over the limit a 429
    with ``{"detail": "rate limit exceeded"}``, ``Retry-After`` (whole seconds, rounded
    up) and the rate headers; allowed responses get the rate headers too. Pure ASGI:
    streaming responses, background tasks, websockets and lifespan pass through.

    Args:
        limiter: A :class:`flint.Limiter` or :class:`flint.SharedLimiter`.
        key: The key pattern, with ``{client}``, ``{path}`` and ``{method}``.
        key_func: Instead of ``key``: ``key_func(request) -> str``.
        client: What ``{client}`` means: a function of the request, such as
            :func:`client_ip`; by default the direct peer's address ("unknown" when
            the server does not know it).
        template: The key template to configure with ``rate``/``per``; by default the
            text of ``key`` before its first placeholder followed by ``*``. Required
            with ``key_func`` and ``rate``/``per``.
        rate, per, algorithm, burst, mode: When given, the limit is configured once
            (on the first request), as a key template; otherwise the keys or templates
            must be configured already.
        cost: Units per request: an int, or ``cost(request) -> int``.
        exempt_paths: Paths never checked: exact paths, and prefixes (entries ending
            in ``/`` match every path that starts with them).
        on_error: When the limiter fails (a shared server is down, the limiter is
            closed, a key function raises): ``"deny"`` answers 503 ``{"detail":
            "rate limiter unavailable"}``, ``"allow"`` lets the request through. Both
            log one warning per burst of failures on the ``flint.fastapi`` logger.
        headers: ``"legacy"`` (``X-RateLimit-Limit/-Remaining/-Reset``), ``"ietf"``
            (``RateLimit-Policy`` and ``RateLimit``), ``"both"`` or ``"none"``.
        response_body: The JSON body of a 429 (default ``{"detail": "rate limit
            exceeded"}``).
        response_status: The status of a denied request (default 429).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: AnyLimiter,
        key: str | None = None,
        key_func: Callable[[Request], str] | None = None,
        client: Callable[[HTTPConnection], str] | None = None,
        template: str | None = None,
        rate: int | None = None,
        per: Any = None,
        algorithm: str = "token_bucket",
        burst: int | None = None,
        mode: Literal["enforce", "shadow"] = "enforce",
        cost: Cost = 1,
        exempt_paths: Iterable[str] = (),
        on_error: OnError = "deny",
        headers: HeaderStyle = "legacy",
        response_body: Any = None,
        response_status: int = 429,
    ) -> None:
        _check_choice("on_error", on_error, _ON_ERROR)
        _check_choice("headers", headers, _STYLES)
        self.app = app
        self.limiter = limiter
        self.spec = _Spec.make(
            key=key,
            key_func=key_func,
            template=template,
            rate=rate,
            per=per,
            algorithm=algorithm,
            burst=burst,
            mode=mode,
            cost=cost,
            fields=_MIDDLEWARE_FIELDS,
        )
        self.client = client or _peer
        if isinstance(exempt_paths, str):
            exempt_paths = [exempt_paths]
        paths = list(exempt_paths)
        self.exempt_exact = frozenset(p for p in paths if not p.endswith("/"))
        self.exempt_prefixes = tuple(p for p in paths if p.endswith("/"))
        self.on_error = on_error
        self.headers = headers
        self.response_body = DEFAULT_BODY if response_body is None else response_body
        self.response_status = response_status
        self._ready = self.spec.template is None and headers not in ("ietf", "both")
        self._lock: asyncio.Lock | None = None
        self._errors = _ErrorLog()

    def is_exempt(self, path: str) -> bool:
        return path in self.exempt_exact or path.startswith(self.exempt_prefixes)

    async def _setup(self, key: str) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._ready:
                await self.spec.setup(self.limiter, key, self.headers in ("ietf", "both"))
                self._ready = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            key = self.spec.key_of(request, self.client)
            cost = self.spec.cost_of(request)
            if not self._ready:
                await self._setup(key)
            result = await self.limiter.acheck(key, cost=cost)
        except Exception as error:
            self._errors.report(error, self.on_error)
            if self.on_error == "allow":
                await self.app(scope, receive, send)
            else:
                await JSONResponse(UNAVAILABLE_BODY, status_code=503)(scope, receive, send)
            return
        extra = _rate_headers([(self.spec, _Result.of(result))], self.headers, time.time())
        if not result.allowed:
            extra["Retry-After"] = str(retry_after_seconds(result))
            response = JSONResponse(
                self.response_body, status_code=self.response_status, headers=extra
            )
            await response(scope, receive, send)
            return
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    # Headers the application set (a route's own RateLimit dependency,
                    # the more specific limit) are kept.
                    if name not in response_headers:
                        response_headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- per-route limits (FastAPI dependency) -------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One limit of a :class:`RateLimit` dependency.

    ``key`` is a pattern with ``{client}``, ``{path}``, ``{method}`` and ``{route}``
    (the route's path template, such as ``/items/{item_id}``), or use ``key_func``.
    With ``rate``/``per`` the limit is configured on first use, as the template
    ``template`` (default: the key's text before its first placeholder, then ``*``).
    """

    key: str | None = None
    rate: int | None = None
    per: Any = None
    algorithm: str = "token_bucket"
    burst: int | None = None
    mode: Literal["enforce", "shadow"] = "enforce"
    cost: Cost = 1
    key_func: Callable[[Request], str] | None = None
    template: str | None = None


class RateLimit:
    """A FastAPI dependency that rate-limits one route.

    ``@app.get("/items", dependencies=[Depends(RateLimit(limiter, key="user:{client}",
    rate=10, per="1m"))])``, or several limits checked atomically (one
    ``acheck_all``: a request denied by one consumes nothing from the others)::

        RateLimit(limiter, Limit(key="ip:{client}", rate=10, per="1s"),
                  Limit(key="route:{route}", rate=1000, per="1m"))

    Denied: raises an ``HTTPException`` (429, ``{"detail": "rate limit exceeded"}``,
    ``Retry-After`` and the rate headers). Allowed: the rate headers are set on the
    response. ``on_error`` and ``headers`` as for :class:`FlintRateLimitMiddleware`.
    """

    def __init__(
        self,
        limiter: AnyLimiter,
        *limits: Limit,
        key: str | None = None,
        key_func: Callable[[Request], str] | None = None,
        template: str | None = None,
        rate: int | None = None,
        per: Any = None,
        algorithm: str = "token_bucket",
        burst: int | None = None,
        mode: Literal["enforce", "shadow"] = "enforce",
        cost: Cost = 1,
        client: Callable[[HTTPConnection], str] | None = None,
        on_error: OnError = "deny",
        headers: HeaderStyle = "legacy",
        detail: Any = "rate limit exceeded",
        status_code: int = 429,
    ) -> None:
        _check_choice("on_error", on_error, _ON_ERROR)
        _check_choice("headers", headers, _STYLES)
        if key is not None or key_func is not None:
            limits = (
                *limits,
                Limit(
                    key=key,
                    key_func=key_func,
                    template=template,
                    rate=rate,
                    per=per,
                    algorithm=algorithm,
                    burst=burst,
                    mode=mode,
                    cost=cost,
                ),
            )
        elif rate is not None or per is not None:
            raise ValueError("rate/per without key= or key_func=: pass Limit(...) objects")
        if not limits:
            raise ValueError("RateLimit needs at least one Limit, or key=")
        self.limiter = limiter
        self.specs = [
            _Spec.make(
                key=limit.key,
                key_func=limit.key_func,
                template=limit.template,
                rate=limit.rate,
                per=limit.per,
                algorithm=limit.algorithm,
                burst=limit.burst,
                mode=limit.mode,
                cost=limit.cost,
                fields=_ROUTE_FIELDS,
            )
            for limit in limits
        ]
        templates = [spec.template for spec in self.specs if spec.template is not None]
        for template in set(templates):
            if templates.count(template) > 1:
                raise ValueError(
                    f"two limits of this RateLimit configure the same template {template!r}, so "
                    "one would replace the other: give each limit a key with its own fixed "
                    'prefix (such as "user:{client}" and "route:{route}")'
                )
        self.client = client or _peer
        self.on_error = on_error
        self.headers = headers
        self.detail = detail
        self.status_code = status_code
        self._want_window = headers in ("ietf", "both")
        self._ready = not self._want_window and all(s.template is None for s in self.specs)
        self._lock: asyncio.Lock | None = None
        self._errors = _ErrorLog()

    async def _setup(self, keys: Sequence[str]) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._ready:
                for spec, key in zip(self.specs, keys):
                    await spec.setup(self.limiter, key, self._want_window)
                self._ready = True

    async def __call__(self, request: Request, response: Response) -> None:
        try:
            items = [
                (spec.key_of(request, self.client), spec.cost_of(request)) for spec in self.specs
            ]
            if not self._ready:
                await self._setup([key for key, _ in items])
            outcome = await self.limiter.acheck_all(items)
        except Exception as error:
            self._errors.report(error, self.on_error)
            if self.on_error == "allow":
                return
            raise HTTPException(status_code=503, detail=UNAVAILABLE_BODY["detail"]) from None
        # A refused check_all marks every item refused; the one that refused it is
        # denied_key (its first item, should a key come twice).
        denied_key = outcome["denied_key"]
        refused = [item[0] == denied_key for item in items]
        if denied_key is not None and True in refused:
            refused = [i == refused.index(True) for i in range(len(items))]
        results = [
            _Result.of(raw, denied=None if outcome["allowed"] else flag)
            for raw, flag in zip(outcome["results"], refused)
        ]
        extra = _rate_headers(list(zip(self.specs, results)), self.headers, time.time())
        if not outcome["allowed"]:
            denied = [result for result in results if not result.allowed]
            wait = max((retry_after_seconds(result) for result in denied), default=1)
            extra["Retry-After"] = str(wait)
            raise HTTPException(status_code=self.status_code, detail=self.detail, headers=extra)
        for name, value in extra.items():
            response.headers[name] = value


# FastAPI reads the dependency's signature at runtime; with postponed annotations
# (strings) it could not resolve these names, so they are given as the classes.
RateLimit.__call__.__annotations__ = {"request": Request, "response": Response, "return": None}
