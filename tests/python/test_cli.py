"""The installed `flint` console script runs the Rust CLI inside the native module."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import flint


def run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], capture_output=True, text=True)


def test_the_console_script_is_the_rust_cli(flint_script: Path, data_dir: Path) -> None:
    assert flint_script.exists(), "pip install puts `flint` beside the interpreter"
    version = run(flint_script, "--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"flint {flint.__version__}"

    d = str(data_dir)
    assert (
        run(
            flint_script, "--data-dir", d, "limit", "add", "k", "--rate", "1", "--per", "1h"
        ).returncode
        == 0
    )
    allowed = run(flint_script, "--data-dir", d, "limit", "check", "k", "--json")
    assert allowed.returncode == 0
    assert json.loads(allowed.stdout)["allowed"] is True
    denied = run(flint_script, "--data-dir", d, "limit", "check", "k")
    assert denied.returncode == 1
    error = run(flint_script, "--data-dir", d, "limit", "check", "missing")
    assert error.returncode == 2
    assert error.stderr.count("\n") == 1 and "flint limit add missing" in error.stderr


def test_the_cli_sees_what_python_wrote_and_is_locked_out_while_open(
    flint_script: Path, data_dir: Path
) -> None:
    with flint.Limiter(data_dir=data_dir) as limiter:
        limiter.limit("py:k", rate=5, per="1m")
        limiter.check("py:k", cost=2)
        locked = run(flint_script, "--data-dir", str(data_dir), "limit", "list")
        assert locked.returncode == 2
        assert "locked by another process" in locked.stderr
        assert "Stop it first" in locked.stderr
    listed = run(flint_script, "--data-dir", str(data_dir), "limit", "list", "--json")
    assert listed.returncode == 0
    (status,) = json.loads(listed.stdout)["limits"]
    assert (status["key"], status["remaining"]) == ("py:k", 3)


def run_bytes(script: Path, *args: str | bytes, cwd: Path | None = None) -> tuple[int, str, str]:
    done = subprocess.run([str(script), *args], capture_output=True, cwd=cwd)
    return done.returncode, done.stdout.decode(), done.stderr.decode(errors="replace")


def one_error_line(code: int, stdout: str, stderr: str) -> str:
    assert code == 2, (code, stdout, stderr)
    assert stdout == ""
    assert stderr.startswith("flint: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_a_non_utf8_argument_exits_2_naming_it(flint_script: Path, data_dir: Path) -> None:
    line = one_error_line(
        *run_bytes(flint_script, "--data-dir", str(data_dir), "limit", "check", b"\xff")
    )
    assert "<KEY>" in line and r"\xFF" in line and "UTF-8" in line, line
    assert "Traceback" not in line


def test_an_empty_data_dir_is_refused_and_creates_nothing(
    flint_script: Path, tmp_path: Path
) -> None:
    for args in (("limit", "add", "k", "--rate", "1", "--per", "1m"), ("limit", "list")):
        line = one_error_line(*run_bytes(flint_script, "--data-dir", "", *args, cwd=tmp_path))
        assert "--data-dir" in line, line  # clap refuses the empty value
    assert list(tmp_path.iterdir()) == [], "nothing left in the current directory"


def test_an_io_error_names_the_os_error_once(flint_script: Path, data_dir: Path) -> None:
    (data_dir / "flint.aof").mkdir(parents=True)
    line = one_error_line(*run_bytes(flint_script, "--data-dir", str(data_dir), "limit", "list"))
    assert line.count("(os error ") == 1, line
    assert "flint.aof" in line


def test_templates_and_shadow_limits_from_the_cli(flint_script: Path, data_dir: Path) -> None:
    d = ("--data-dir", str(data_dir))
    added = run(flint_script, *d, "limit", "add", "ip:*", "--rate", "2", "--per", "1h")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("created ip:*")
    checked = run(flint_script, *d, "limit", "check", "ip:1.2.3.4", "--json")
    assert checked.returncode == 0, checked.stderr
    assert (json.loads(checked.stdout)["limit"], json.loads(checked.stdout)["remaining"]) == (2, 1)
    status = json.loads(run(flint_script, *d, "limit", "status", "ip:1.2.3.4", "--json").stdout)
    assert status["template"] == "ip:*"
    templates = run(flint_script, *d, "limit", "list", "--kind", "templates", "--json")
    assert [s["key"] for s in json.loads(templates.stdout)["limits"]] == ["ip:*"]
    keys = run(flint_script, *d, "limit", "list", "--kind", "keys", "--json")
    assert [s["key"] for s in json.loads(keys.stdout)["limits"]] == ["ip:1.2.3.4"]
    refused = run(flint_script, *d, "limit", "check", "ip:*")
    assert refused.returncode == 2 and "template" in refused.stderr

    shadow = run(
        flint_script, *d, "limit", "add", "s", "--rate", "1", "--per", "1h", "--mode", "shadow"
    )
    assert shadow.returncode == 0 and "shadow" in shadow.stdout, shadow
    assert run(flint_script, *d, "limit", "check", "s").returncode == 0
    second = run(flint_script, *d, "limit", "check", "s", "--json")
    assert second.returncode == 0, "a shadow limit allows"
    assert json.loads(second.stdout)["shadow_denied"] is True
    top = run(flint_script, *d, "limit", "top", "--by", "shadow_denied", "--json")
    assert [s["key"] for s in json.loads(top.stdout)["top"]] == ["s"]
    bad = run(flint_script, *d, "limit", "add", "s", "--rate", "1", "--per", "1h", "--mode", "x")
    assert bad.returncode == 2 and '"x"' in bad.stderr
