"""os.fork(): the data directory passes between a parent and its forked child.

A limiter opened before a fork belongs to the parent; the child must not keep the
parent's lock. (Using that limiter in the child is tested in test_durability.py.)
"""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path
from typing import NoReturn

import pytest

import flint

WAIT = 10.0  # seconds: the bound of every wait on the child


def read_line(fd: int, timeout: float = WAIT) -> str:
    """One line from the pipe ``fd``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no line within {timeout}s (got {data!r})"
        chunk = os.read(fd, 4096)
        assert chunk, f"the other side closed the pipe (got {data!r})"
        data += chunk
    return data.decode()


def wait_exit(pid: int, timeout: float = WAIT) -> int | None:
    """The exit code of child ``pid``, or None if it is still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def child(data_dir: Path, commands: int, replies: int) -> NoReturn:
    """The forked child: on "go", opens the directory, says how that went, and holds it
    until "exit"."""
    code = 1
    try:
        assert read_line(commands) == "go\n"
        try:
            own = flint.Limiter(data_dir)
        except flint.FlintError as error:
            reply = f"{type(error).__name__}: {error}".replace("\n", " ")
            os.write(replies, f"{reply}\n".encode())
        else:
            os.write(replies, b"opened\n")
            assert read_line(commands) == "exit\n"
            own.close()
            code = 0
    finally:
        os._exit(code)  # never run the parent's pytest (or its atexit) in the child


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_directory_passes_between_parent_and_forked_child(data_dir: Path) -> None:
    limiter = flint.Limiter(data_dir)
    limiter.limit("k", rate=10, per="1m")
    commands_read, commands = os.pipe()
    replies, replies_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(commands)
        os.close(replies)
        child(data_dir, commands_read, replies_write)
    os.close(commands_read)
    os.close(replies_write)
    running = True
    try:
        # Once the parent has closed its limiter, the child can open the directory.
        limiter.close()
        os.write(commands, b"go\n")
        assert read_line(replies) == "opened\n"

        # While the child holds it, the parent is refused, and told who holds it.
        with pytest.raises(flint.DataDirLocked) as caught:
            flint.Limiter(data_dir)
        message = str(caught.value)
        assert caught.value.pid == pid, message
        assert f"pid {pid}" in message, message
        assert "already open in this process" not in message, message

        # Once the child has exited, the parent opens it again, state intact.
        os.write(commands, b"exit\n")
        assert wait_exit(pid) == 0
        running = False
        with flint.Limiter(data_dir) as again:
            assert again.status("k")["rate"] == 10  # type: ignore[index]
    finally:
        os.close(commands)
        os.close(replies)
        if running:
            os.kill(pid, signal.SIGKILL)
            wait_exit(pid)
