"""A FastAPI application rate-limited by Flint, with an embedded limiter in ``.flint/``.

Run it with ``make example-fastapi`` (uvicorn on 127.0.0.1:8000), then::

    curl -i http://127.0.0.1:8000/            # 100 per minute per client address
    curl -i http://127.0.0.1:8000/search?q=x  # plus 5 per 10 s per client, atomically
    curl -i http://127.0.0.1:8000/health      # exempt: never limited

Every decision is in the log under ``.flint/``: a restart keeps each client's quota.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

import flint
from flint.fastapi import FlintRateLimitMiddleware, Limit, RateLimit, client_ip

# sync="batch": decisions reach the disk within 100 ms (or 100 events), which is
# what a web application usually wants; "always" syncs before every answer.
limiter = flint.Limiter(data_dir=".flint", sync="batch")

# Requests reach the app directly or through a proxy on this machine; only that proxy
# may say who the client is (X-Forwarded-For / Forwarded).
client = client_ip(trusted_proxies=["127.0.0.1/32"])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    limiter.close()


app = FastAPI(title="Flint example", lifespan=lifespan)

# Every request except /health: 100 per minute per client (the template "ip:*",
# configured on the first request; per-client state is created as clients come).
app.add_middleware(
    FlintRateLimitMiddleware,
    limiter=limiter,
    key="ip:{client}",
    client=client,
    rate=100,
    per="1m",
    exempt_paths=["/health", "/docs", "/openapi.json"],
    headers="both",
)

# /search also has a tighter per-client limit and a global one, checked together:
# a request refused by one consumes nothing from the other.
search_limit = RateLimit(
    limiter,
    Limit(key="search:{client}", rate=5, per="10s"),
    Limit(key="search-all:{route}", rate=50, per="10s"),
    client=client,
    headers="both",
)


@app.get("/")
async def root() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/search", dependencies=[Depends(search_limit)])
async def search(q: str = "") -> dict[str, object]:
    return {"query": q, "results": []}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
