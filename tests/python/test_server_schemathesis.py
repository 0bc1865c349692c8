"""The server against its own OpenAPI document: Schemathesis (from PyPI) generates
requests for every operation of `GET /v1/openapi.json` and checks that no answer is a
server error and that every answer (status, content type, body) is one the document
declares. Bounded: a fixed number of examples per operation, and a time limit on the
run as a whole.

`FLINT_SCHEMATHESIS_SEED` picks the seed (fixed by default, so that CI is
reproducible); `FLINT_SCHEMATHESIS_EXAMPLES` the examples per operation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server_process import running_server

TOKEN = "schemathesis-token"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]


def test_every_answer_conforms_to_the_openapi_document(tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "st"
    assert st.exists(), "schemathesis is a test dependency (Makefile)"
    seed = os.environ.get("FLINT_SCHEMATHESIS_SEED", "20261125")
    examples = os.environ.get("FLINT_SCHEMATHESIS_EXAMPLES", "30")
    # POST /v1/acquire may wait up to the request timeout less 1 s: keep that below
    # schemathesis's own 10 s timeout per request.
    with running_server(
        tmp_path / ".flint", token=TOKEN, args=["--request-timeout", "5"]
    ) as server:
        # Something to find: a configured key for the operations that take one.
        with server.client() as api:
            limit = {"key": "api:user-42", "rate": 100, "per": "1m"}
            api.post("/v1/limits", json=limit).raise_for_status()
        run = subprocess.run(
            [
                str(st),
                "run",
                f"{server.base_url}/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                examples,
                "--seed",
                seed,
                "--request-timeout",
                "10",
                "--workers",
                "2",
                "--generation-database",
                "none",
                "--no-color",
            ],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert server.alive(), "the server survived the run"
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    assert " passed" in output and "failed" not in output.split("SUMMARY")[-1], output[-4000:]
