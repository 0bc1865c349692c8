"""Seed 001 (shared mode), literally: its command lines are run as written, through
bash, in a fresh working directory. The seed's port is 7878; when something else on
the machine holds it, those runs are skipped and the same lines run again with only
the port changed, so the seed is always exercised. (The seed's Python snippets, the
SharedLimiter client, are tested with the client.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import (
    FLINT,
    Server,
    ServerFailedToStart,
    free_port,
    port_is_free,
    server_env,
    spawn,
    wait_healthy,
)

SEED_PORT = 7878

# The seed's command lines, as the seed writes them.
START = """flint --data-dir .flint-shared server start \\
  --bind 127.0.0.1:7878 \\
  --token dev-secret"""

START_BATCH = """flint --data-dir .flint-shared server start \\
  --bind 127.0.0.1:7878 \\
  --token dev-secret \\
  --sync batch \\
  --flush-every-ms 100 \\
  --flush-every-events 100 \\
  --max-blocking 128"""

START_LOOPBACK_NO_TOKEN = "flint server start --bind 127.0.0.1:7878"
START_OPEN_NO_TOKEN = "flint server start --bind 0.0.0.0:7878"
START_OPEN_WITH_TOKEN = 'flint server start --bind 0.0.0.0:7878 --token "$FLINT_SERVER_TOKEN"'

CURL_CONFIGURE = """curl -X POST http://127.0.0.1:7878/v1/limits \\
  -H "Authorization: Bearer dev-secret" \\
  -H "Content-Type: application/json" \\
  -d '{"key":"api:user-42","rate":100,"per":"1m","algorithm":"token_bucket"}'"""

CURL_CHECK = """curl -X POST http://127.0.0.1:7878/v1/check \\
  -H "Authorization: Bearer dev-secret" \\
  -H "Content-Type: application/json" \\
  -d '{"key":"api:user-42","cost":1}'"""


@pytest.fixture(params=["seed-port", "free-port"])
def port(request: pytest.FixtureRequest) -> int:
    """7878 as in the seed (skipped when taken), or a free port substituted for it."""
    if request.param == "seed-port":
        if not (port_is_free(SEED_PORT, "127.0.0.1") and port_is_free(SEED_PORT, "0.0.0.0")):
            pytest.skip(
                f"port {SEED_PORT} is in use on this machine: the seed's lines run on a "
                "free port instead (the free-port variant of this test)"
            )
        return SEED_PORT
    return free_port()


def on_port(line: str, port: int) -> str:
    """The seed's line, with its port replaced (the only substitution ever made)."""
    return line.replace(str(SEED_PORT), str(port))


def bash(
    line: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line],
        cwd=cwd,
        env=server_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def start(line: str, cwd: Path, port: int, env: dict[str, str] | None = None) -> Server:
    """Runs a seed start line through bash (`exec`, so the pid is the server's) and
    waits for its health check."""
    process, stderr_path = spawn(["bash", "-c", f"exec {line}"], cwd=cwd, env=env)
    token = (env or {}).get("FLINT_SERVER_TOKEN") or (
        "dev-secret" if "dev-secret" in line else None
    )
    data_dir = cwd / (".flint-shared" if ".flint-shared" in line else ".flint")
    server = Server(process, "127.0.0.1", port, token, data_dir, stderr_path)
    try:
        wait_healthy(server.base_url, process)
    except ServerFailedToStart as error:
        stopped = server.stop()
        raise AssertionError(f"{line!r} did not start: {error}\n{stopped.stderr}") from None
    return server


@pytest.fixture
def cwd(tmp_path: Path) -> Iterator[Path]:
    """A fresh working directory, as a user's project would be."""
    work = tmp_path / "project"
    work.mkdir()
    yield work


@pytest.fixture
def curl() -> str:
    found = shutil.which("curl")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("curl is missing: .ci/run installs it")
        pytest.skip("curl is not installed (CI installs it)")
    return found


def test_the_console_script_is_on_the_path_the_seed_lines_use(cwd: Path) -> None:
    found = bash("command -v flint", cwd)
    assert found.stdout.strip() == str(FLINT)


def test_seed_start_line_and_both_curl_lines(cwd: Path, port: int, curl: str) -> None:
    server = start(on_port(START, port), cwd, port)
    try:
        configured = bash(on_port(CURL_CONFIGURE, port), cwd)
        assert configured.returncode == 0, configured.stderr
        body = json.loads(configured.stdout)
        assert body["change"] == "created"
        status = body["status"]
        assert status["key"] == "api:user-42"
        assert (status["rate"], status["per"], status["per_ms"]) == (100, "1m", 60_000)
        assert status["algorithm"] == "token_bucket"
        assert status["remaining"] == 100

        checked = bash(on_port(CURL_CHECK, port), cwd)
        assert checked.returncode == 0, checked.stderr
        result = json.loads(checked.stdout)
        assert result["allowed"] is True
        assert result["key"] == "api:user-42"
        assert (result["remaining"], result["limit"], result["cost"]) == (99, 100, 1)
        assert result["algorithm"] == "token_bucket"
        assert result["retry_after"] == 0.0
        assert isinstance(result["reset_at"], float)

        # Run again, the configure line is a no-op (apps call it at every start).
        again = json.loads(bash(on_port(CURL_CONFIGURE, port), cwd).stdout)
        assert again["change"] == "unchanged"
        assert again["status"]["remaining"] == 99

        # Without the seed's Authorization header, the same request is refused.
        no_token = bash(on_port(CURL_CHECK, port).replace("Bearer dev-secret", "Bearer nope"), cwd)
        assert json.loads(no_token.stdout)["error"]["code"] == "unauthorized"
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    # The data directory is where the seed put it, relative to the working directory.
    assert (cwd / ".flint-shared" / "flint.aof").exists()


def test_seed_batch_fsync_line(cwd: Path, port: int) -> None:
    server = start(on_port(START_BATCH, port), cwd, port)
    try:
        with server.client() as api:
            doctor = api.get("/v1/doctor").json()
            assert doctor["sync"] == "batch"
            limit = {"key": "api:user-42", "rate": 100, "per": "1m"}
            assert api.post("/v1/limits", json=limit).status_code == 200
            for _ in range(5):
                assert api.post("/v1/check", json={"key": "api:user-42"}).json()["allowed"]
            # The seed's explicit fsync boundary.
            assert api.post("/v1/log/flush").json() == {"ok": True}
            assert api.get("/v1/doctor").json()["pending_events"] == 0
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert 'sync="batch"' in stopped.stderr or "sync=batch" in stopped.stderr
    # Batch mode still keeps every event across a clean stop.
    server = start(on_port(START, port), cwd, port)
    try:
        with server.client() as api:
            # Counted exactly; `remaining` refills a unit every 0.6 s of the restart.
            status = api.get("/v1/limits/api:user-42").json()
            assert status["allowed"] == 5
            assert 95 <= status["remaining"] <= 100
    finally:
        server.stop()


def test_seed_loopback_without_a_token_works(cwd: Path, port: int) -> None:
    server = start(on_port(START_LOOPBACK_NO_TOKEN, port), cwd, port)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as anonymous:
            limit = {"key": "api:user-42", "rate": 2, "per": "1m"}
            assert anonymous.post("/v1/limits", json=limit).status_code == 200
            assert anonymous.post("/v1/check", json={"key": "api:user-42"}).json()["allowed"]
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert 'auth="off"' in stopped.stderr or "auth=off" in stopped.stderr
    assert (cwd / ".flint").is_dir(), "the default data directory"


def test_seed_open_bind_without_a_token_is_rejected(cwd: Path) -> None:
    # Refused before anything is bound: the seed's own port is fine whatever holds it.
    rejected = bash(START_OPEN_NO_TOKEN, cwd)
    assert rejected.returncode == 2
    message = rejected.stderr
    assert message.count("\n") == 1, "one line"
    assert "0.0.0.0:7878" in message
    assert "without a token" in message, "why"
    assert "--token" in message and "FLINT_SERVER_TOKEN" in message, "how"
    assert "127.0.0.1" in message, "or the loopback alternative"
    assert not (cwd / ".flint").exists(), "nothing was opened"


def test_seed_open_bind_with_the_token_from_the_environment(cwd: Path, port: int) -> None:
    token = "seed-env-token"
    env = {"FLINT_SERVER_TOKEN": token}
    server = start(on_port(START_OPEN_WITH_TOKEN, port), cwd, port, env=env)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as anonymous:
            assert anonymous.get("/v1/health").status_code == 200
            refused = anonymous.get("/v1/limits")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as api:
            assert api.get("/v1/limits").json() == {"limits": []}
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert 'auth="on"' in stopped.stderr or "auth=on" in stopped.stderr
    assert "0.0.0.0" in stopped.stderr
    assert token not in stopped.stderr, "the token is never logged"


def test_the_token_may_come_from_the_environment_alone(cwd: Path, port: int) -> None:
    env = {"FLINT_SERVER_TOKEN": "only-in-env"}
    server = start(on_port(START_OPEN_NO_TOKEN, port), cwd, port, env=env)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as anonymous:
            assert anonymous.get("/v1/limits").status_code == 401
            authorized = {"Authorization": "Bearer only-in-env"}
            assert anonymous.get("/v1/limits", headers=authorized).status_code == 200
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr


# The seed's Python snippets, verbatim, in order (only the port may be substituted).
# The seed presumes a function it does not show, and limits for the keys of its
# check_all; PY_SETUP and the third snippet provide them.
PY_SETUP = """
import flint
calls = []
def process_request(): calls.append("request")
"""

PY_SNIPPETS = [
    'import flint\nlimiter = flint.SharedLimiter(\n"http://127.0.0.1:7878",\n'
    'token="dev-secret",\ntimeout=10.0,\n)\n'
    'limiter.limit("api:user-42", rate=100, per="1m")\n'
    'if limiter.allow("api:user-42"):\n    process_request()',
    'result = limiter.check("api:user-42", cost=5)\n'
    "print(result.allowed)\nprint(result.remaining)\nprint(result.reset_at)",
    # Limits for the keys the next snippet checks (not shown in the seed).
    'limiter.limit("user:42", rate=10, per="1m")\n'
    'limiter.limit("org:acme", rate=100, per="1m")\n'
    'limiter.limit("route:/v1/chat", rate=10, per="1m")',
    'result = limiter.check_all([\n"user:42",\n{"key": "org:acme", "cost": 10},\n'
    '("route:/v1/chat", 1),\n])\nif result["allowed"]:\n    process_request()\nelse:\n'
    '    print("blocked by", result["denied_key"])',
]


def test_the_seed_python_snippets_run_as_written(cwd: Path, port: int) -> None:
    server = start(on_port(START, port), cwd, port)
    try:
        namespace: dict = {}
        exec(PY_SETUP, namespace)
        for snippet in PY_SNIPPETS:
            exec(on_port(snippet, port), namespace)
        limiter = namespace["limiter"]
        assert namespace["calls"] == ["request", "request"]
        assert namespace["result"]["allowed"] is True
        status = limiter.status("api:user-42")
        assert status["allowed_cost"] == 1 + 5
        assert status["remaining"] <= 100 - 6
        assert limiter.status("org:acme")["allowed_cost"] == 10
        limiter.close()
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr


def test_the_readme_shared_quick_start_runs_as_written(cwd: Path, port: int) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Quick start, shared mode", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(sh|python)\n(.*?)```", section, re.S)
    start_line, python, curl = blocks[0][1].strip(), blocks[1][1], blocks[2][1]
    server = start(on_port(start_line, port), cwd, port)
    try:
        exec(on_port(python, port), {})
        for line in curl.strip().replace("\\\n", " ").splitlines():
            done = bash(on_port(line, port), cwd)
            assert done.returncode == 0, (line, done.stderr)
        listed = bash(on_port(curl.strip().splitlines()[-1], port), cwd)
        assert "api:user-42" in listed.stdout
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
