"""What only flint.SharedLimiter can meet: a wrong token, no server, a server killed
mid-session, a server that never answers, a lost answer (never a second check), a
fork. Each error names the server's URL."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from server_process import Server, free_port, start_server

import flint

from conftest import TOKEN, shared_limiter


class FakeServer:
    """A TCP server on 127.0.0.1 that reads each request whole and then either closes
    the connection without answering or, with ``hang``, never answers; it counts the
    requests it read."""

    def __init__(self, hang: bool = False) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[str] = []
        self.hang = hang
        self.stopped = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += conn.recv(65536)
            except OSError:
                pass
            if data:
                self.requests.append(head.split(b"\r\n")[0].decode())
            if self.hang:
                self.held.append(conn)  # keep it open, never answer
            else:
                conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def closing_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def silent_server() -> Iterator[FakeServer]:
    server = FakeServer(hang=True)
    yield server
    server.close()


def test_results_are_the_same_classes_as_embedded(flint_server: Server) -> None:
    with shared_limiter(flint_server) as limiter:
        assert isinstance(limiter, flint.SharedLimiter)
        assert limiter.url == flint_server.base_url and limiter.timeout == 10.0
        assert repr(limiter) == f'SharedLimiter(url="{flint_server.base_url}", timeout=10.0)'
        assert limiter.health() == {"ok": True, "version": flint.__version__}
        limiter.limit("classes", rate=1, per="1h")
        assert type(limiter.check("classes")) is flint.CheckResult
        limiter.remove("classes")


def test_a_wrong_or_missing_token_raises_authentication_error(
    flint_server: Server,
) -> None:
    for token in ("wrong", None):
        with flint.SharedLimiter(flint_server.base_url, token=token) as limiter:
            assert limiter.health()["ok"] is True, "health needs no token"
            with pytest.raises(flint.AuthenticationError) as caught:
                limiter.check("k")
            error = caught.value
            assert isinstance(error, flint.FlintError)
            assert flint_server.base_url in str(error)
            url = flint_server.base_url
            assert (error.url, error.status, error.code) == (url, 401, "unauthorized")
            assert "token" in str(error)


def test_nothing_listening_raises_a_connection_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    limiter = flint.SharedLimiter(url, token=TOKEN)
    with pytest.raises(flint.FlintConnectionError) as caught:
        limiter.check("k")
    assert isinstance(caught.value, ConnectionError)
    assert str(caught.value) == (
        f"cannot reach the Flint server at {url}: connection refused; "
        "is `flint server start` running there?"
    )
    assert caught.value.url == url and caught.value.status is None
    for call in (lambda: limiter.status("k"), limiter.list, limiter.doctor, limiter.flush):
        with pytest.raises(flint.FlintConnectionError):
            call()


def test_a_server_killed_mid_session(server_of_my_own: Server) -> None:
    limiter = shared_limiter(server_of_my_own)
    limiter.limit("k", rate=10, per="1h")
    assert limiter.allow("k")  # a keep-alive connection is now in the pool
    server_of_my_own.kill()
    with pytest.raises(flint.FlintConnectionError) as caught:
        limiter.check("k")
    assert server_of_my_own.base_url in str(caught.value)
    # Started again on the same directory: the allowed check survived the kill.
    again = start_server(server_of_my_own.data_dir, token=TOKEN)
    try:
        with shared_limiter(again) as fresh:
            assert fresh.status("k")["allowed"] == 1  # type: ignore[index]
    finally:
        stopped = again.stop()
    assert stopped.returncode == 0, stopped.stderr


def test_a_server_stopped_gracefully_exits_0(server_of_my_own: Server) -> None:
    with shared_limiter(server_of_my_own) as limiter:
        limiter.limit("k", rate=10, per="1h")
        assert limiter.allow("k")
    stopped = server_of_my_own.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stderr


def test_a_server_that_never_answers_times_out(silent_server: FakeServer) -> None:
    limiter = flint.SharedLimiter(silent_server.url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(flint.FlintConnectionError) as caught:
        limiter.check("k")
    took = time.monotonic() - started
    assert 0.4 < took < 3, took
    message = str(caught.value)
    assert silent_server.url in message
    assert "did not answer POST /v1/check within 0.5 s" in message
    assert "may or may not have been applied" in message
    assert silent_server.requests == ["POST /v1/check HTTP/1.1"], "sent once"


def test_the_gil_is_released_while_waiting(silent_server: FakeServer) -> None:
    limiter = flint.SharedLimiter(silent_server.url, timeout=0.5)
    done = threading.Event()

    def wait() -> None:
        with pytest.raises(flint.FlintConnectionError):
            limiter.check("k")
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    spins = 0
    while not done.is_set():
        spins += 1
    thread.join()
    assert spins > 1000, "this thread ran while the other waited for the server"


@pytest.mark.parametrize(
    ("call", "line"),
    [
        (lambda lim: lim.check("k"), "POST /v1/check"),
        (lambda lim: lim.allow("k", cost=2), "POST /v1/check"),
        (lambda lim: lim.check_all(["a", ("b", 2)]), "POST /v1/check-all"),
        (lambda lim: lim.allow_all(["a"]), "POST /v1/check-all"),
        (lambda lim: lim.limit("k", rate=1, per="1s"), "POST /v1/limits"),
        (lambda lim: lim.reset("k"), "POST /v1/reset"),
        (lambda lim: lim.remove("k"), "DELETE /v1/limits/k"),
        (lambda lim: lim.compact(), "POST /v1/log/compact"),
        (lambda lim: lim.flush(), "POST /v1/log/flush"),
    ],
)
def test_a_lost_answer_is_never_sent_twice(
    closing_server: FakeServer, call: object, line: str
) -> None:
    limiter = flint.SharedLimiter(closing_server.url)
    with pytest.raises(flint.FlintConnectionError) as caught:
        call(limiter)  # type: ignore[operator]
    assert "closed the connection before answering" in str(caught.value)
    assert "was not sent again" in str(caught.value)
    assert closing_server.requests == [f"{line} HTTP/1.1"]


def test_a_read_is_sent_once_more(closing_server: FakeServer) -> None:
    limiter = flint.SharedLimiter(closing_server.url)
    with pytest.raises(flint.FlintConnectionError) as caught:
        limiter.status("k")
    assert "changed nothing" in str(caught.value)
    assert closing_server.requests == ["GET /v1/limits/k HTTP/1.1"] * 2


async def test_async_methods_raise_the_same_errors(closing_server: FakeServer) -> None:
    limiter = flint.SharedLimiter(closing_server.url)
    with pytest.raises(flint.FlintConnectionError):
        await limiter.acheck("k")
    assert len(closing_server.requests) == 1


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"url": "127.0.0.1:7878"}, 'the Flint server URL "127.0.0.1:7878" has no scheme'),
        ({"url": "ftp://h"}, 'the Flint server URL "ftp://h" has the scheme "ftp"'),
        ({"url": "http://h:7878/?a=1"}, "has a query"),
        ({"url": ""}, "is empty"),
        ({"url": None}, "url None is a NoneType, not a str"),
        ({"url": "http://h", "timeout": 0}, "timeout 0 is out of range"),
        ({"url": "http://h", "timeout": True}, "timeout True is a bool, not a number"),
        ({"url": "http://h", "timeout": "10"}, "timeout '10' is a str, not a number"),
        ({"url": "http://h", "token": ""}, "the token for the Flint server at http://h is empty"),
        ({"url": "http://h", "token": 5}, "token 5 is an int, not a str"),
        ({"url": "http://h", "token": "a\nb"}, "cannot carry"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object], text: str) -> None:
    url = kwargs.pop("url")
    with pytest.raises(flint.InvalidArgument) as caught:
        flint.SharedLimiter(url, **kwargs)  # type: ignore[arg-type]
    assert text in str(caught.value)


def test_a_path_prefix_and_trailing_slash(flint_server: Server) -> None:
    with flint.SharedLimiter(flint_server.base_url + "/", token=TOKEN, timeout=2) as limiter:
        assert limiter.url == flint_server.base_url
        assert limiter.list("no-such-prefix") == []
    with flint.SharedLimiter(flint_server.base_url + "/proxy", token=TOKEN) as limiter:
        with pytest.raises(flint.FlintError, match="has no route"):
            limiter.list()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_uses_connections_of_its_own(flint_server: Server) -> None:
    limiter = shared_limiter(flint_server)
    limiter.limit("fork", rate=1000, per="1h")
    assert limiter.allow("fork")  # the parent has a pooled connection now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            ok = all(limiter.allow("fork") for _ in range(50))
            os.write(write, b"1" if ok else b"0")
        except BaseException:
            os.write(write, b"E")
        finally:
            os._exit(0)
    os.close(write)
    parent_ok = all(limiter.allow("fork") for _ in range(50))
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert parent_ok
    assert limiter.status("fork")["allowed"] == 101  # type: ignore[index]
    limiter.remove("fork")
