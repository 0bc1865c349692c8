"""State survives close/reopen, SIGKILL and other processes: tested with real
processes and real kills."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flint

from conftest import START

ALGORITHMS = ("token_bucket", "sliding_window_log", "fixed_window_counter")


@pytest.mark.parametrize("sync", ["always", "batch"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_state_survives_close_and_reopen(data_dir: Path, sync: str, algorithm: str) -> None:
    clock = flint.ManualClock(start=START)
    with flint.Limiter(data_dir=data_dir, sync=sync, clock=clock) as limiter:
        limiter.limit("k", rate=10, per="1m", algorithm=algorithm)
        for cost in (1, 2, 3):
            limiter.check("k", cost=cost)
            clock.advance(1)
        before = limiter.status("k")
        history = limiter.history("k")
    with flint.Limiter(data_dir=data_dir, sync=sync, clock=clock) as limiter:
        assert limiter.status("k") == before
        assert limiter.history("k") == history
        assert limiter.status("k")["remaining"] == 4  # type: ignore[index]


CHILD = textwrap.dedent(
    """
    import sys
    import flint

    limiter = flint.Limiter(data_dir=sys.argv[1], sync=sys.argv[2], flush_every_ms=5)
    limiter.limit("k", rate=10**9, per="1d", algorithm="sliding_window_log")
    i = 0
    while True:
        cost = 1 + i % 3
        if not limiter.allow("k", cost=cost):
            raise SystemExit("denied")
        print(cost, flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("sync", ["always", "batch"])
def test_sigkill_loses_no_acknowledged_decision(tmp_path: Path, data_dir: Path, sync: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    acknowledged = 0
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, str(script), str(data_dir), sync],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(random.randint(1, 300)):
            line = child.stdout.readline()
            assert line, "the child stopped early"
            acknowledged += int(line)
        child.send_signal(signal.SIGKILL)
        # Decisions acknowledged before the kill may still be in the pipe.
        acknowledged += sum(int(line) for line in child.stdout.read().split() if line)
        child.wait()
        with flint.Limiter(data_dir=data_dir) as limiter:
            recorded = limiter.status("k")["allowed_cost"]  # type: ignore[index]
        # At most one decision (cost ≤ 3) was in flight, recorded or not.
        assert acknowledged <= recorded <= acknowledged + 3
        acknowledged = recorded


HOLDER = textwrap.dedent(
    """
    import sys
    import flint

    limiter = flint.Limiter(data_dir=sys.argv[1])
    print("open", flush=True)
    sys.stdin.readline()
    """
)


def test_the_lock_is_held_against_a_second_process(tmp_path: Path, data_dir: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen(
        [sys.executable, str(script), str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == "open\n"
    with pytest.raises(flint.DataDirLocked) as caught:
        flint.Limiter(data_dir=data_dir)
    assert caught.value.pid == holder.pid
    assert f"pid {holder.pid}" in str(caught.value)
    assert str(data_dir) in str(caught.value)
    holder.stdin.close()  # the holder exits; interpreter exit closes its limiter
    assert holder.wait() == 0
    flint.Limiter(data_dir=data_dir).close()


def test_interpreter_exit_syncs_and_releases(tmp_path: Path, data_dir: Path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(
        "import sys, flint\n"
        "limiter = flint.Limiter(data_dir=sys.argv[1], sync='batch', flush_every_ms=3600000,"
        " flush_every_events=10**9)\n"
        "limiter.limit('k', rate=5, per='1h')\n"
        "limiter.allow('k', cost=3)\n"
    )
    subprocess.run([sys.executable, str(script), str(data_dir)], check=True)
    with flint.Limiter(data_dir=data_dir) as limiter:
        assert limiter.status("k")["remaining"] == 2  # type: ignore[index]
        assert limiter.doctor()["checks"][0]["ok"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_using_a_limiter_after_fork_raises_in_the_child(data_dir: Path) -> None:
    limiter = flint.Limiter(data_dir=data_dir)
    limiter.limit("k", rate=10, per="1m")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            limiter.allow("k")
            report = b"no error"
        except flint.FlintError as error:
            report = str(error).encode()
        os.write(write, report)
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    message = os.read(read, 4096).decode()
    assert os.WEXITSTATUS(status) == 0
    assert "before a fork" in message, message
    # The parent's limiter is untouched.
    assert limiter.allow("k")
    assert limiter.status("k")["allowed"] == 1  # type: ignore[index]
    limiter.close()
