"""The server as a process: bind refusal, the directory lock, restarts, signals,
crashes, concurrency and hostile connections. Every wait is bounded; no assertion is
about speed."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from server_process import (
    Server,
    free_port,
    has_ipv6_loopback,
    raw_exchange,
    run_flint,
    running_server,
    start_server,
)

TOKEN = "process-test-token"


def status(server: Server, key: str) -> dict[str, Any]:
    with server.client() as api:
        response = api.get(f"/v1/limits/{quote(key, safe='')}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def configure(
    server: Server, key: str, rate: int, per: str, algorithm: str = "token_bucket"
) -> None:
    with server.client() as api:
        response = api.post(
            "/v1/limits", json={"key": key, "rate": rate, "per": per, "algorithm": algorithm}
        )
        assert response.status_code == 200, response.text


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# -- binding ---------------------------------------------------------------------------


def test_a_non_loopback_bind_without_a_token_is_refused(tmp_path: Path) -> None:
    for bind in ["0.0.0.0:0", "[::]:0"]:
        refused = run_flint(
            "--data-dir", str(tmp_path / ".flint"), "server", "start", "--bind", bind
        )
        assert refused.returncode == 2, refused
        assert "without a token" in refused.stderr
        assert "--token" in refused.stderr and "FLINT_SERVER_TOKEN" in refused.stderr
        assert refused.stderr.count("\n") == 1, "one line"
    assert not (tmp_path / ".flint").exists(), "refused before opening the directory"

    empty = run_flint(
        "--data-dir",
        str(tmp_path / ".flint"),
        "server",
        "start",
        "--bind",
        "127.0.0.1:0",
        "--token",
        "",
    )
    assert empty.returncode == 2
    assert "empty" in empty.stderr
    bad = run_flint("--data-dir", str(tmp_path / ".flint"), "server", "start", "--bind", "nowhere")
    assert bad.returncode == 2
    assert "HOST:PORT" in bad.stderr


def test_ipv6_loopback_needs_no_token(tmp_path: Path) -> None:
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback ([::1])")
    with running_server(tmp_path / ".flint", host="::1") as server, server.client() as api:
        assert server.base_url.startswith("http://[::1]:")
        assert api.get("/v1/limits").status_code == 200


def test_a_second_server_on_the_same_directory_exits_2_locked(tmp_path: Path) -> None:
    data_dir = tmp_path / ".flint"
    with running_server(data_dir, token=TOKEN) as first:
        second = run_flint(
            "--data-dir",
            str(data_dir),
            "server",
            "start",
            "--bind",
            f"127.0.0.1:{free_port()}",
            timeout=20,
        )
        assert second.returncode == 2, second
        assert "locked by another process" in second.stderr
        assert str(data_dir) in second.stderr
        assert f"pid {first.pid}" in second.stderr
        with first.client() as api:
            assert api.get("/v1/doctor").json()["ok"] is True, "the first one is unharmed"


def test_a_busy_port_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = run_flint(
            "--data-dir", str(tmp_path / ".flint"), "server", "start", "--bind", f"127.0.0.1:{port}"
        )
    assert busy.returncode == 2
    assert "cannot listen" in busy.stderr
    # The directory was opened and released again: a server can start on it now.
    with running_server(tmp_path / ".flint"):
        pass


# -- stopping and restarting ---------------------------------------------------------


def test_sigterm_exits_0_releases_the_lock_and_logs(tmp_path: Path) -> None:
    data_dir = tmp_path / ".flint"
    server = start_server(data_dir, token=TOKEN, args=["--log-format", "json"])
    try:
        configure(server, "k", 5, "1h")
        with server.client() as api:
            api.post("/v1/check", json={"key": "k", "cost": 2}).raise_for_status()
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    lines = [json.loads(line) for line in stopped.stderr.splitlines() if line.strip()]
    messages = [line["fields"]["message"] for line in lines]
    started = next(
        line["fields"] for line in lines if line["fields"]["message"] == "flint server started"
    )
    assert started["address"] == f"127.0.0.1:{server.port}"
    assert Path(started["data_dir"]) == data_dir
    assert started["sync"] == "always"
    assert started["auth"] == "on"
    assert any("stopped" in m for m in messages), messages
    assert all(line["level"] in {"INFO", "WARN"} for line in lines), lines

    # The lock is free at once: the CLI, then a new server, open the directory.
    listed = run_flint("--data-dir", str(data_dir), "limit", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    with running_server(data_dir, args=["--sync", "batch"]) as again:
        assert status(again, "k")["remaining"] == 3
        text = again.stop()
    assert text.returncode == 0
    assert "flint server started" in text.stderr
    assert 'auth="off"' in text.stderr or "auth=off" in text.stderr
    assert "sync=batch" in text.stderr or 'sync="batch"' in text.stderr
    assert "stopped" in text.stderr


def test_sigint_exits_0_too(tmp_path: Path) -> None:
    server = start_server(tmp_path / ".flint")
    try:
        os.kill(server.pid, signal.SIGINT)
        server.process.wait(timeout=20)
    finally:
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr


def test_a_restart_keeps_the_state(tmp_path: Path) -> None:
    data_dir = tmp_path / ".flint"
    with running_server(data_dir, token=TOKEN) as server:
        configure(server, "api:user-42", 10, "1d", "sliding_window_log")
        with server.client() as api:
            for _ in range(3):
                api.post("/v1/check", json={"key": "api:user-42", "cost": 2}).raise_for_status()
        before = status(server, "api:user-42")
        assert before["remaining"] == 4
    assert server.stopped is not None and server.stopped.returncode == 0
    with running_server(data_dir, token=TOKEN) as server:
        after = status(server, "api:user-42")
    for field in ["remaining", "allowed", "allowed_cost", "rate", "per", "algorithm", "last_seen"]:
        assert after[field] == before[field], field


# -- SIGKILL under sync=always ----------------------------------------------------------

# A child client: THREADS connections send checks until the server goes away; each
# acknowledged (200, allowed) decision is appended to the file and fsynced before the
# next request on that connection. It prints how many requests were sent.
ACK_CLIENT = r"""
import http.client, json, os, sys, threading
port, key, path, threads = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
headers = {"Content-Type": "application/json", "Authorization": "Bearer " + sys.argv[5]}
body = json.dumps({"key": key, "cost": 1})
lock = threading.Lock()
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
sent = [0]
def run(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while True:
            with lock:
                sent[0] += 1
            conn.request("POST", "/v1/check", body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status == 200 and json.loads(data)["allowed"]:
                with lock:
                    os.write(fd, b"%d\n" % n)
                    os.fsync(fd)
            elif response.status != 200:
                raise SystemExit("unexpected %d %r" % (response.status, data))
    except (OSError, http.client.HTTPException):
        return
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join(timeout=60)
print(sent[0])
"""


def test_sigkill_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    data_dir = tmp_path / ".flint"
    acks = tmp_path / "acks"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    threads = 4
    rounds = 20
    key = "crash:k"
    with running_server(data_dir, token=TOKEN) as server:
        configure(server, key, 1_000_000, "1d")
    acknowledged = 0
    allowed_before = 0
    for round_ in range(rounds):
        server = start_server(data_dir, token=TOKEN)
        client: subprocess.Popen[str] | None = None
        try:
            assert status(server, key)["allowed"] == allowed_before
            acks.write_bytes(b"")
            client = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    ACK_CLIENT,
                    str(server.port),
                    key,
                    str(acks),
                    str(threads),
                    TOKEN,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_until(lambda: acks.stat().st_size > 0, what="a first acknowledged check")
            time.sleep(rng.uniform(0.0, 0.25))
            stopped = server.kill()
            assert stopped.returncode == -signal.SIGKILL
            _, err = client.communicate(timeout=30)
            assert client.returncode == 0, err
        finally:
            server.kill()
            if client is not None and client.poll() is None:
                client.kill()
                client.wait(timeout=10)
        acked_now = len(acks.read_bytes().splitlines())
        acknowledged += acked_now
        with running_server(data_dir, token=TOKEN) as server:
            after = status(server, key)
        allowed_now = after["allowed"] - allowed_before
        message = f"round {round_}, seed {seed}: {allowed_now} allowed, {acked_now} acknowledged"
        # Every acknowledged decision survived; at most one per connection was decided
        # and recorded without its answer reaching the client before the kill.
        assert acked_now <= allowed_now <= acked_now + threads, message
        assert after["allowed_cost"] == after["allowed"]
        allowed_before = after["allowed"]
    assert allowed_before >= acknowledged >= rounds


# -- SIGTERM drains requests in flight -----------------------------------------------


def test_sigterm_finishes_a_request_whose_body_is_still_coming(tmp_path: Path) -> None:
    """Requests read up to their body (the server asked for it with 100 Continue) when
    SIGTERM arrives still get their answer, and their decisions are kept."""
    data_dir = tmp_path / ".flint"
    key = "drain:k"
    server = start_server(data_dir, token=TOKEN)
    sockets: list[socket.socket] = []
    try:
        configure(server, key, 100, "1d")
        body = json.dumps({"key": key}).encode()
        head = (
            "POST /v1/check HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sockets.append(s)
            s.sendall(head)
            interim = s.recv(4096)
            assert interim.startswith(b"HTTP/1.1 100"), interim
        os.kill(server.pid, signal.SIGTERM)

        def refuses() -> bool:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except OSError:
                return True
            return False

        wait_until(refuses, what="the server to stop accepting")
        assert server.alive(), "still finishing the requests in flight"
        for s in sockets:
            s.sendall(body)
            response = read_response(s)
            assert response.startswith(b"HTTP/1.1 200"), response
            assert b'"allowed":true' in response
        server.process.wait(timeout=20)
    finally:
        for s in sockets:
            s.close()
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    with running_server(data_dir, token=TOKEN) as again:
        assert status(again, key)["allowed"] == 10


def read_response(s: socket.socket, timeout: float = 10.0) -> bytes:
    """One HTTP/1.1 response with a Content-Length body."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def test_sigterm_during_a_flood_of_checks_answers_every_request_it_took(tmp_path: Path) -> None:
    data_dir = tmp_path / ".flint"
    key = "flood:k"
    server = start_server(data_dir, token=TOKEN)
    workers = 32
    outcomes: list[list[str]] = [[] for _ in range(workers)]
    broken: list[str] = []
    allowed = [0] * workers
    go = threading.Event()

    def hammer(n: int) -> None:
        # A new connection now and then, keep-alive in between.
        while True:
            try:
                with server.client(timeout=20) as api:
                    for _ in range(20):
                        try:
                            with api.stream("POST", "/v1/check", json={"key": key}) as response:
                                # The server answered: the answer must be whole and a 200.
                                try:
                                    body = json.loads(response.read())
                                except httpx.HTTPError as error:
                                    broken.append(f"cut mid-response: {error!r}")
                                    return
                                outcomes[n].append(str(response.status_code))
                                if response.status_code == 200 and body["allowed"]:
                                    allowed[n] += 1
                        except (
                            httpx.ConnectError,
                            httpx.RemoteProtocolError,
                            httpx.ReadError,
                            httpx.WriteError,
                        ):
                            # No answer at all: refused, or closed before answering.
                            return
            except httpx.HTTPError as error:
                broken.append(repr(error))
                return
            if not go.is_set():
                return

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(workers)]
    try:
        configure(server, key, 10_000_000, "1d")
        go.set()
        for t in threads:
            t.start()
        wait_until(lambda: sum(len(o) for o in outcomes) >= 200, what="200 answered checks")
        os.kill(server.pid, signal.SIGTERM)
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        server.process.wait(timeout=20)
    finally:
        go.clear()
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert not broken, broken[:5]
    statuses = {s for o in outcomes for s in o}
    assert statuses == {"200"}, statuses
    with running_server(data_dir, token=TOKEN) as again:
        # Every answered decision was kept, and nothing was decided without an answer.
        assert status(again, key)["allowed"] == sum(allowed)


# -- exactness under contention ----------------------------------------------------------

HAMMER_CLIENT = r"""
import http.client, json, os, sys, time
port, key, token, checks, go = sys.argv[1:6]
port, checks = int(port), int(checks)
deadline = time.monotonic() + 10
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
allowed = denied = 0
for _ in range(checks):
    conn.request("POST", "/v1/check", json.dumps({"key": key}), headers)
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 200, body
    if body["allowed"]:
        allowed += 1
    else:
        denied += 1
print(json.dumps({"allowed": allowed, "denied": denied}))
"""


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("shared") / ".flint", token=TOKEN) as server:
        yield server


@pytest.mark.parametrize(
    "algorithm", ["token_bucket", "sliding_window_log", "fixed_window_counter"]
)
def test_eight_processes_never_get_more_than_the_rate(
    shared_server: Server, tmp_path: Path, algorithm: str
) -> None:
    rate, processes, checks = 50, 8, 40
    key = f"hammer:{algorithm}"
    # A day: no refill worth a unit during the test (a window boundary is checked below).
    configure(shared_server, key, rate, "1d", algorithm)
    go = tmp_path / "go"
    day = int(time.time() // 86400)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                HAMMER_CLIENT,
                str(shared_server.port),
                key,
                TOKEN,
                str(checks),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    try:
        go.touch()
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    if algorithm == "fixed_window_counter" and int(time.time() // 86400) != day:
        pytest.skip("the run crossed midnight UTC, the start of a new window")
    total_allowed = sum(r["allowed"] for r in results)
    total_denied = sum(r["denied"] for r in results)
    assert total_allowed + total_denied == processes * checks
    assert total_allowed == rate, results
    after = status(shared_server, key)
    assert (after["allowed"], after["denied"], after["remaining"]) == (
        rate,
        processes * checks - rate,
        0,
    )


# -- many connections, slow and hostile clients --------------------------------------------


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        pytest.skip(f"the open-file limit ({soft}) is below {wanted}")


def test_500_concurrent_connections_are_all_answered(tmp_path: Path) -> None:
    count = 500
    raise_fd_limit(2 * count + 200)  # inherited by the server, too
    with running_server(tmp_path / ".flint", token=TOKEN) as server:
        configure(server, "many", 1_000_000, "1d")
        sockets: list[socket.socket] = []
        try:
            for _ in range(count):
                sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            request = (
                "GET /v1/limits/many HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {TOKEN}\r\n\r\n"
            ).encode()
            for s in sockets:
                s.sendall(request)
            for s in sockets:
                response = read_response(s)
                assert response.startswith(b"HTTP/1.1 200"), response[:200]
                assert b'"key":"many"' in response
            with server.client() as api:
                metrics = api.get("/metrics").text
            gauge = next(
                line
                for line in metrics.splitlines()
                if line.startswith("flint_http_open_connections ")
            )
            assert int(float(gauge.split()[1])) >= count, gauge
            # A second request on every kept-alive connection.
            for s in sockets:
                s.sendall(request)
            for s in sockets:
                assert read_response(s).startswith(b"HTTP/1.1 200")
        finally:
            for s in sockets:
                s.close()
        with server.client() as api:
            assert api.get("/v1/health").status_code == 200
            assert api.get("/v1/doctor").json()["ok"] is True

            def closed_counted() -> bool:
                text = api.get("/metrics").text
                line = next(
                    x for x in text.splitlines() if x.startswith("flint_http_open_connections ")
                )
                return int(float(line.split()[1])) < 10

            wait_until(closed_counted, what="the open-connections gauge to come back down")


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that gives a client one second to send its headers, and one second
    for a whole request."""
    data_dir = tmp_path_factory.mktemp("impatient") / ".flint"
    args = ["--header-timeout", "1", "--request-timeout", "1"]
    with running_server(data_dir, token=TOKEN, args=args) as server:
        yield server


def test_a_body_that_never_comes_is_a_503_timeout(impatient_server: Server) -> None:
    configure(impatient_server, "slow-body", 5, "1h")
    body = json.dumps({"key": "slow-body"}).encode()
    request = (
        "POST /v1/check HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body[:5]
    data, closed = raw_exchange("127.0.0.1", impatient_server.port, request, timeout=10)
    assert data.startswith(b"HTTP/1.1 503"), data
    head, _, payload = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(payload)["error"]["code"] == "timeout"
    assert closed, "the connection is closed after the timeout answer"
    assert status(impatient_server, "slow-body")["allowed"] == 0, "nothing was decided"


def test_slowloris_is_cut_off_after_the_header_timeout(impatient_server: Server) -> None:
    data, closed = raw_exchange(
        "127.0.0.1", impatient_server.port, b"POST /v1/check HT", timeout=10
    )
    assert closed, "a connection that never finishes its request line is closed"
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data
    half_headers = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    data, closed = raw_exchange("127.0.0.1", impatient_server.port, half_headers, timeout=10)
    assert closed, "nor one that never finishes its headers"
    with impatient_server.client() as api:
        assert api.get("/v1/health").status_code == 200


def test_an_idle_keep_alive_connection_is_closed(impatient_server: Server) -> None:
    request = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    data, closed = raw_exchange("127.0.0.1", impatient_server.port, request, timeout=10)
    assert data.startswith(b"HTTP/1.1 200"), data
    assert closed, "the idle connection is closed after the header timeout"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\xfe garbage \r\n\r\n",
        bytes(random.Random(7).randrange(256) for _ in range(4096)),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /v1/health HTTP/9.9\r\n\r\n",
        b"G\x00T /v1/health HTTP/1.1\r\n\r\n",
        b"POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/check HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 10_000 + b"\r\n",
        b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\n\r\n",
    ],
    ids=[
        "nul-bytes",
        "random",
        "http2-preface",
        "bad-version",
        "nul-in-method",
        "bad-chunk",
        "negative-length",
        "two-lengths",
        "1mb-header",
        "10k-headers",
        "1mb-uri",
    ],
)
def test_malformed_bytes_do_not_hurt_the_server(impatient_server: Server, garbage: bytes) -> None:
    data, _ = raw_exchange("127.0.0.1", impatient_server.port, garbage, timeout=10)
    if data:
        status_line = data.split(b"\r\n", 1)[0]
        assert re.match(rb"HTTP/1\.[01] (4\d\d|505)", status_line), status_line
    assert impatient_server.alive()
    with impatient_server.client() as api:
        assert api.get("/v1/health").status_code == 200
        assert api.get("/v1/doctor").status_code == 200


def test_the_server_survives_clients_that_vanish_mid_request(impatient_server: Server) -> None:
    body = json.dumps({"key": "nobody"}).encode()
    for cut in [10, 60, 120]:
        request = (
            "POST /v1/check HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) + 100}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=10) as s:
            s.sendall(request[:cut] if cut < len(request) else request)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with impatient_server.client() as api:
        assert api.get("/v1/health").status_code == 200


def test_a_half_sent_request_does_not_hold_the_stop_for_the_grace_period(
    tmp_path: Path,
) -> None:
    # A connection that stopped halfway through a request's headers (a slow or stuck
    # client) carries no decision: SIGTERM need not wait the 60 s grace for it. (hyper
    # alone would wait for those headers until the grace period or the header timeout
    # ends; a connection that sent nothing at all it closes at once.)
    server = start_server(tmp_path / ".flint", args=["--shutdown-grace", "60"])
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    silent.sendall(b"GET /v1/hea")
    try:
        with server.client() as api:
            assert api.get("/v1/health").status_code == 200
        os.kill(server.pid, signal.SIGTERM)
        # Bounded far below the grace period: a stop that waited for the silent
        # connection would still be running when this gives up.
        server.process.wait(timeout=20)
    finally:
        silent.close()
        stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert "cut off" not in stopped.stderr
