"""The snippets of the user's request and the README run as written."""

from __future__ import annotations

import asyncio
import os
import re
import textwrap
from pathlib import Path

import pytest

import flint

ROOT = Path(__file__).resolve().parents[2]

# The embedded-mode seed's snippets, verbatim, in order. The seed presumes a few
# things it does not show (the functions it calls and limits for the keys its later
# snippets check); SETUP provides them.
SETUP = """
import flint
calls = []
def process_request(): calls.append("request")
def run_model_call(): calls.append("model")
def send(): calls.append("email")
"""

SNIPPETS = [
    'import flint\nlimiter = flint.Limiter(data_dir=".flint")',
    'limiter.limit(\n"api:user-42",\nrate=100,\nper="1m",\nalgorithm="token_bucket",\n)',
    'limiter.limit("short", rate=10, per="250ms")\n'
    'limiter.limit("minute", rate=100, per="1m")\n'
    'limiter.limit("daily", rate=10_000, per="1d")',
    'if limiter.allow("api:user-42"):\n    process_request()',
    'result = limiter.check("api:user-42")\n'
    "print(result.allowed)\nprint(result.remaining)\nprint(result.reset_at)\nprint(result.algorithm)",
    # Limits for the keys the next snippets use (not shown in the seed).
    'limiter.limit("ai:user-42", rate=1000, per="1m")\n'
    'limiter.limit("user:42", rate=10, per="1m")\n'
    'limiter.limit("org:acme", rate=100, per="1m")\n'
    'limiter.limit("route:/v1/chat", rate=10, per="1m")',
    'result = limiter.check("ai:user-42", cost=250)\nif result.allowed:\n    run_model_call()',
    'result = limiter.check_all([\n"user:42",\n{"key": "org:acme", "cost": 10},\n'
    '("route:/v1/chat", 1),\n])\nif result["allowed"]:\n    process_request()\nelse:\n'
    '    print("blocked by", result["denied_key"])',
    '@limiter.rate_limit("email:send", rate=10, per="1m")\ndef send_email():\n    send()',
    "try:\n    send_email()\nexcept flint.RateLimitExceeded as exc:\n"
    "    print(exc.key)\n    print(exc.remaining)\n    print(exc.reset_at)",
    "limiter.flush()",
    'limiter.status("api:user-42")\nlimiter.list()\nlimiter.history("api:user-42")\n'
    'limiter.top(by="denied", limit=20)\nlimiter.doctor()',
    "limiter.compact()",
]

ASYNC_SNIPPET = """
async def main():
    await limiter.alimit("api:user-42", rate=100, per="1m")
    result = await limiter.acheck("api:user-42")
    status = await limiter.astatus("api:user-42")
    return result, status
"""

SYNC_MODES_SNIPPET = (
    'safe = flint.Limiter(data_dir=".flint", sync="always")\n'
    'fast = flint.Limiter(\ndata_dir=".flint-fast",\nsync="batch",\nflush_every_ms=100,\n'
    "flush_every_events=100,\n)"
)


def test_the_embedded_seed_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(SETUP, namespace)
    for snippet in SNIPPETS:
        exec(snippet, namespace)
    limiter = namespace["limiter"]
    assert namespace["calls"] == ["request", "model", "request", "email"]
    assert limiter.status("api:user-42")["remaining"] == 98

    exec(ASYNC_SNIPPET, namespace)
    result, status = asyncio.run(namespace["main"]())
    assert result.allowed and status["key"] == "api:user-42"

    # The sync-mode snippet opens ".flint" again: a directory has one owner at a time.
    limiter.close()
    exec(SYNC_MODES_SNIPPET, namespace)
    assert namespace["safe"].sync == "always" and namespace["fast"].sync == "batch"
    namespace["safe"].close()
    namespace["fast"].close()
    assert os.path.isdir(".flint-fast")


def test_the_readme_quick_start_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", quick_start, re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    exec(textwrap.dedent(code.group(1)), {})
    with flint.Limiter(data_dir=".flint") as limiter:
        assert limiter.status("api:user-42")["allowed_cost"] == 1 + 5 + 3  # type: ignore[index]
