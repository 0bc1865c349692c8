"""The FastAPI app of the end-to-end test (``test_fastapi_end_to_end.py``), imported
by each uvicorn worker process: ``uvicorn fastapi_e2e_app:app --workers 2``.

Configured by the environment the test gives uvicorn:

- ``FLINT_E2E_URL``, ``FLINT_E2E_TOKEN``: the Flint server every worker shares.
- ``FLINT_E2E_KEY``, ``FLINT_E2E_RATE``, ``FLINT_E2E_PER``: the middleware's limit.
- ``FLINT_E2E_READY_DIR``: each worker writes a file named after its pid there once
  its lifespan has started, so the test knows when both workers are up.

Every response, the middleware's 429s included, carries ``X-Worker-Pid``: an outer
ASGI middleware adds it, so that the test sees which worker answered.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

import flint
from flint.fastapi import FlintRateLimitMiddleware

PID = str(os.getpid())

limiter = flint.SharedLimiter(
    os.environ["FLINT_E2E_URL"], token=os.environ.get("FLINT_E2E_TOKEN") or None, timeout=5.0
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    ready_dir = os.environ.get("FLINT_E2E_READY_DIR")
    if ready_dir:
        (Path(ready_dir) / PID).write_text(PID)
    try:
        yield
    finally:
        limiter.close()


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def hello() -> dict[str, Any]:
    return {"hello": "world", "pid": os.getpid()}


class WorkerPidHeader:
    """Pure ASGI: adds ``X-Worker-Pid`` to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-worker-pid", PID.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_pid)


app.add_middleware(
    FlintRateLimitMiddleware,
    limiter=limiter,
    key=os.environ.get("FLINT_E2E_KEY", "e2e:{client}"),
    rate=int(os.environ.get("FLINT_E2E_RATE", "50")),
    per=os.environ.get("FLINT_E2E_PER", "1d"),
    headers="legacy",
)
# Added last, so outermost: it also sees the 429s the rate-limit middleware sends.
app.add_middleware(WorkerPidHeader)
