"""Every route of the shared-mode HTTP API (SPEC §7), its body and its errors, against
a real `flint server start` process."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from server_process import Server, running_server

import flint

from conftest import RESULT_FIELDS as PYTHON_RESULT_FIELDS
from conftest import STATUS_FIELDS as PYTHON_STATUS_FIELDS

TOKEN = "api-test-token"

# The HTTP bodies carry the template, the mode and the shadow denials of every status,
# and whether a shadow limit would have denied each check.
STATUS_FIELDS = PYTHON_STATUS_FIELDS | {"mode", "template", "shadow_denied"}
RESULT_FIELDS = PYTHON_RESULT_FIELDS | {"shadow_denied"}


# Every documented route and method, with a valid body where it takes one.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/health", None),
    ("GET", "/v1/limits", None),
    ("POST", "/v1/limits", {"key": "auth:k", "rate": 5, "per": "1m"}),
    ("GET", "/v1/limits/auth:k", None),
    ("DELETE", "/v1/limits/auth:k", None),
    ("POST", "/v1/check", {"key": "auth:k"}),
    ("POST", "/v1/peek", {"key": "auth:k"}),
    ("POST", "/v1/acquire", {"key": "auth:k", "timeout": 0}),
    ("POST", "/v1/check-all", {"items": [{"key": "auth:k"}]}),
    ("POST", "/v1/reset", {"key": "auth:k"}),
    ("POST", "/v1/refund", {"key": "auth:k"}),
    ("GET", "/v1/history/auth:k", None),
    ("GET", "/v1/top", None),
    ("POST", "/v1/log/flush", None),
    ("POST", "/v1/log/compact", None),
    ("GET", "/v1/doctor", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/openapi.json", None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("api") / ".flint", token=TOKEN) as server:
        yield server


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[httpx.Client]:
    """A client of a server of its own (for whole-server views such as top)."""
    with running_server(tmp_path / ".flint", token=TOKEN) as server, server.client() as client:
        yield client


def unique(prefix: str = "k") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


def configure(api: httpx.Client, key: str, rate: int, per: str = "1h", **extra: Any) -> Any:
    response = api.post("/v1/limits", json={"key": key, "rate": rate, "per": per, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def check(api: httpx.Client, key: str, cost: int = 1) -> Any:
    response = api.post("/v1/check", json={"key": key, "cost": cost})
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    """A JSON error body `{"error": {"code", "message"}}` with this status and code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body["error"]


# -- the routes ------------------------------------------------------------------


def test_health_needs_no_token_and_names_the_version(server: Server) -> None:
    with server.client(auth=False) as anonymous:
        response = anonymous.get("/v1/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"ok": True, "version": flint.__version__}


def test_configure_reports_created_unchanged_and_updated(api: httpx.Client) -> None:
    key = unique()
    created = configure(api, key, 10, "1m")
    assert created["change"] == "created"
    status = created["status"]
    assert set(status) == STATUS_FIELDS
    assert status["key"] == key
    assert (status["rate"], status["per"], status["per_ms"]) == (10, "1m", 60_000)
    assert status["algorithm"] == "token_bucket"
    assert status["remaining"] == 10
    assert status["last_seen"] is None

    assert configure(api, key, 10, "1m")["change"] == "unchanged"
    assert configure(api, key, 10, "60s")["change"] == "unchanged", "the same period"

    check(api, key, cost=4)
    updated = configure(api, key, 8, "1m")
    assert updated["change"] == "updated"
    # Same algorithm: the units consumed carry over: max(0, 8 - (10 - 6)).
    assert updated["status"]["remaining"] == 4
    assert updated["status"]["allowed"] == 1, "counters are kept"
    other = configure(api, key, 8, "1m", algorithm="sliding_window_log")
    assert other["change"] == "updated"
    assert other["status"]["algorithm"] == "sliding_window_log"
    assert other["status"]["remaining"] == 8, "another algorithm starts at full capacity"


def test_a_burst_is_configured_shown_and_carried_over(api: httpx.Client) -> None:
    key = unique("burst")
    created = configure(api, key, 10, "1h", burst=50)
    assert created["change"] == "created"
    status = created["status"]
    assert set(status) == STATUS_FIELDS
    assert (status["rate"], status["burst"], status["remaining"]) == (10, 50, 50)
    assert configure(api, key, 10, "1h", burst=50)["change"] == "unchanged"
    result = check(api, key, cost=45)
    assert (result["allowed"], result["remaining"], result["limit"]) == (True, 5, 50)
    # 45 consumed: max(0, 20 - 45) of a burst of 20.
    smaller = configure(api, key, 10, "1h", burst=20)
    assert smaller["change"] == "updated"
    assert (smaller["status"]["burst"], smaller["status"]["remaining"]) == (20, 0)
    plain = configure(api, key, 10, "1h")
    assert (plain["change"], plain["status"]["burst"]) == ("updated", 10)
    assert configure(api, key, 10, "1h", burst=10)["change"] == "unchanged", "burst == rate"
    assert configure(api, key, 10, "1h", burst=None)["change"] == "unchanged", "null: the rate"

    too_much = api.post("/v1/check", json={"key": key, "cost": 11})
    assert "the limit's rate (10)" in assert_error(too_much, 400, "invalid_argument")["message"]
    configure(api, key, 10, "1h", burst=50)
    assert check(api, key, cost=11)["allowed"]
    too_much = api.post("/v1/check", json={"key": key, "cost": 51})
    message = assert_error(too_much, 400, "invalid_argument")["message"]
    assert "the limit's burst (50)" in message and key in message


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            {"rate": 10, "per": "1h", "algorithm": "sliding_window_log", "burst": 50},
            "burst applies to token_bucket only",
        ),
        (
            {"rate": 10, "per": "1h", "algorithm": "fixed_window_counter", "burst": 50},
            "burst applies to token_bucket only",
        ),
        ({"rate": 10, "per": "1h", "burst": 0}, "burst 0 is invalid"),
        ({"rate": 10, "per": "1h", "burst": 10**13}, "burst 10000000000000 is too large"),
    ],
)
def test_bad_bursts_are_400(api: httpx.Client, body: dict[str, Any], text: str) -> None:
    key = unique("badburst")
    response = api.post("/v1/limits", json={"key": key, **body})
    assert text in assert_error(response, 400, "invalid_argument")["message"]
    assert api.get(f"/v1/limits/{quote(key, safe='')}").status_code == 404


def test_the_openapi_document_describes_burst(api: httpx.Client) -> None:
    schemas = api.get("/v1/openapi.json").json()["components"]["schemas"]
    assert "burst" in schemas["LimitRequest"]["properties"]
    assert "burst" not in schemas["LimitRequest"].get("required", [])
    assert "burst" in schemas["KeyStatus"]["required"]


@pytest.mark.parametrize(
    "algorithm", ["token_bucket", "sliding_window_log", "fixed_window_counter"]
)
def test_every_algorithm_can_be_configured(api: httpx.Client, algorithm: str) -> None:
    key = unique(algorithm)
    assert configure(api, key, 3, "1d", algorithm=algorithm)["status"]["algorithm"] == algorithm
    assert check(api, key)["algorithm"] == algorithm


def test_status_list_and_prefix(api: httpx.Client) -> None:
    prefix = unique("list") + "/"
    keys = [f"{prefix}b", f"{prefix}a", f"{prefix}c"]
    for key in keys:
        configure(api, key, 2)
    check(api, f"{prefix}a")

    status = api.get(f"/v1/limits/{quote(f'{prefix}a', safe='')}")
    assert status.status_code == 200
    body = status.json()
    assert set(body) == STATUS_FIELDS
    assert (body["key"], body["remaining"], body["allowed"], body["allowed_cost"]) == (
        f"{prefix}a",
        1,
        1,
        1,
    )
    assert isinstance(body["last_seen"], float) and isinstance(body["reset_at"], float)

    everything = api.get("/v1/limits")
    assert everything.status_code == 200
    listed = [s["key"] for s in everything.json()["limits"]]
    assert listed == sorted(listed), "sorted by key"
    assert set(keys) <= set(listed)

    only = api.get("/v1/limits", params={"prefix": prefix})
    assert only.status_code == 200
    assert set(only.json()) == {"limits"}
    assert [s["key"] for s in only.json()["limits"]] == sorted(keys)
    for s in only.json()["limits"]:
        assert set(s) == STATUS_FIELDS
    assert api.get("/v1/limits", params={"prefix": unique("none")}).json() == {"limits": []}


def test_delete_removes_the_limit(api: httpx.Client) -> None:
    key = unique("del")
    configure(api, key, 2)
    path = f"/v1/limits/{quote(key, safe='')}"
    response = api.delete(path)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert_error(api.get(path), 404, "limit_not_found")
    assert_error(api.delete(path), 404, "limit_not_found")
    assert_error(api.post("/v1/check", json={"key": key}), 404, "limit_not_found")


def test_check_allowed_then_denied_with_200(api: httpx.Client) -> None:
    key = unique("chk")
    configure(api, key, 2, "1h")
    first = check(api, key)
    assert set(first) == RESULT_FIELDS
    assert first["allowed"] is True
    assert (first["key"], first["remaining"], first["limit"], first["cost"]) == (key, 1, 2, 1)
    assert first["retry_after"] == 0.0
    assert isinstance(first["reset_at"], float)

    default_cost = api.post("/v1/check", json={"key": key})
    assert default_cost.status_code == 200
    assert default_cost.json()["cost"] == 1 and default_cost.json()["remaining"] == 0

    denied = api.post("/v1/check", json={"key": key, "cost": 1})
    assert denied.status_code == 200, "a denial is a 200 with allowed false"
    body = denied.json()
    assert body["allowed"] is False
    assert body["remaining"] == 0
    assert body["retry_after"] > 0

    status = api.get(f"/v1/limits/{quote(key, safe='')}").json()
    assert (status["allowed"], status["denied"], status["denied_cost"]) == (2, 1, 1)

    assert_error(api.post("/v1/check", json={"key": key, "cost": 3}), 400, "invalid_argument")
    assert_error(api.post("/v1/check", json={"key": key, "cost": 0}), 400, "invalid_argument")
    assert_error(api.post("/v1/check", json={"key": unique("nope")}), 404, "limit_not_found")


def test_peek_answers_like_check_and_consumes_nothing(api: httpx.Client) -> None:
    key = unique("peek")
    configure(api, key, 2, "1h")
    peeked = api.post("/v1/peek", json={"key": key, "cost": 2})
    assert peeked.status_code == 200
    assert set(peeked.json()) == RESULT_FIELDS
    assert (peeked.json()["allowed"], peeked.json()["remaining"]) == (True, 0)
    status = api.get(f"/v1/limits/{quote(key, safe='')}").json()
    assert (status["remaining"], status["allowed"], status["last_seen"]) == (2, 0, None)
    check(api, key)
    check(api, key)
    denied = api.post("/v1/peek", json={"key": key}).json()
    assert denied["allowed"] is False and denied["retry_after"] > 0
    assert api.get(f"/v1/limits/{quote(key, safe='')}").json()["denied"] == 0
    assert_error(api.post("/v1/peek", json={"key": key, "cost": 3}), 400, "invalid_argument")
    assert_error(api.post("/v1/peek", json={"key": unique("nope")}), 404, "limit_not_found")


def test_acquire_waits_server_side_then_answers(api: httpx.Client) -> None:
    key = unique("acq")
    configure(api, key, 4, "1s")
    assert api.post("/v1/check", json={"key": key, "cost": 4}).json()["allowed"] is True
    waited = api.post("/v1/acquire", json={"key": key, "cost": 1, "timeout": 5})
    assert waited.status_code == 200 and waited.json()["allowed"] is True
    assert set(waited.json()) == RESULT_FIELDS
    status = api.get(f"/v1/limits/{quote(key, safe='')}").json()
    assert (status["allowed"], status["denied"]) == (2, 0)
    slow = unique("acq-slow")
    configure(api, slow, 1, "1h")
    check(api, slow)
    refused = api.post("/v1/acquire", json={"key": slow, "timeout": 0.2})
    assert refused.status_code == 200 and refused.json()["allowed"] is False
    negative = api.post("/v1/acquire", json={"key": slow, "timeout": -1})
    assert_error(negative, 400, "invalid_argument")
    assert_error(api.post("/v1/acquire", json={"key": unique("nope")}), 404, "limit_not_found")


def test_check_all_is_all_or_nothing(api: httpx.Client) -> None:
    roomy, full = unique("roomy"), unique("full")
    configure(api, roomy, 5)
    configure(api, full, 1)
    check(api, full)

    response = api.post("/v1/check-all", json={"items": [{"key": roomy, "cost": 2}, {"key": full}]})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"allowed", "denied_key", "results"}
    assert body["allowed"] is False
    assert body["denied_key"] == full
    assert [r["key"] for r in body["results"]] == [roomy, full]
    for result in body["results"]:
        assert set(result) == RESULT_FIELDS
    assert api.get(f"/v1/limits/{quote(roomy, safe='')}").json()["remaining"] == 5, (
        "nothing consumed when one key denies"
    )

    api.post("/v1/reset", json={"key": full}).raise_for_status()
    allowed = api.post("/v1/check-all", json={"items": [{"key": roomy, "cost": 2}, {"key": full}]})
    assert allowed.status_code == 200
    assert allowed.json()["allowed"] is True
    assert allowed.json()["denied_key"] is None
    assert api.get(f"/v1/limits/{quote(roomy, safe='')}").json()["remaining"] == 3
    assert api.get(f"/v1/limits/{quote(full, safe='')}").json()["remaining"] == 0


def test_check_all_sums_duplicate_keys(api: httpx.Client) -> None:
    key = unique("dup")
    configure(api, key, 5)
    summed = api.post(
        "/v1/check-all", json={"items": [{"key": key, "cost": 2}, {"key": key, "cost": 2}]}
    )
    assert summed.status_code == 200
    assert summed.json()["allowed"] is True
    assert api.get(f"/v1/limits/{quote(key, safe='')}").json()["remaining"] == 1
    # 3 + 3 is more than the rate: such a call could never be allowed.
    over = api.post(
        "/v1/check-all", json={"items": [{"key": key, "cost": 3}, {"key": key, "cost": 3}]}
    )
    assert_error(over, 400, "invalid_argument")
    assert_error(api.post("/v1/check-all", json={"items": []}), 400, "invalid_argument")
    unknown = api.post("/v1/check-all", json={"items": [{"key": key}, {"key": unique("nope")}]})
    assert_error(unknown, 404, "limit_not_found")


def test_reset_restores_full_capacity(api: httpx.Client) -> None:
    key = unique("reset")
    configure(api, key, 3)
    check(api, key, cost=3)
    response = api.post("/v1/reset", json={"key": key})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    status = api.get(f"/v1/limits/{quote(key, safe='')}").json()
    assert status["remaining"] == 3
    assert status["allowed"] == 1, "counters are kept"
    assert_error(api.post("/v1/reset", json={"key": unique("nope")}), 404, "limit_not_found")


def test_refund_gives_units_back_and_rejects_bad_costs(api: httpx.Client) -> None:
    key = unique("refund")
    path = f"/v1/limits/{quote(key, safe='')}"
    configure(api, key, 3, algorithm="sliding_window_log")
    check(api, key, cost=3)
    response = api.post("/v1/refund", json={"key": key, "cost": 2})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    status = api.get(path).json()
    assert (status["remaining"], status["allowed"], status["allowed_cost"]) == (2, 1, 3)
    assert api.post("/v1/refund", json={"key": key}).json() == {"ok": True}, "cost defaults to 1"
    assert api.get(path).json()["remaining"] == 3
    full = api.post("/v1/refund", json={"key": key, "cost": 3})
    assert full.json() == {"ok": True}, "at full capacity: allowed, changes nothing"
    assert api.get(path).json()["remaining"] == 3
    too_much = api.post("/v1/refund", json={"key": key, "cost": 4})
    error = assert_error(too_much, 400, "invalid_argument")
    assert "refund cost 4" in error["message"] and key in error["message"]
    assert_error(api.post("/v1/refund", json={"key": key, "cost": 0}), 400, "invalid_argument")
    assert_error(api.post("/v1/refund", json={"key": unique("nope")}), 404, "limit_not_found")
    assert len(api.get(f"/v1/history/{quote(key, safe='')}").json()["events"]) == 1


def test_history_is_oldest_first_and_limited(api: httpx.Client) -> None:
    key = unique("hist")
    configure(api, key, 3)
    for _ in range(4):
        api.post("/v1/check", json={"key": key}).raise_for_status()
    path = f"/v1/history/{quote(key, safe='')}"
    everything = api.get(path)
    assert everything.status_code == 200
    body = everything.json()
    assert set(body) == {"key", "events"}
    assert body["key"] == key
    events = body["events"]
    assert [e["allowed"] for e in events] == [True, True, True, False]
    assert [e["remaining"] for e in events] == [2, 1, 0, 0]
    assert all(
        set(e) == {"at", "cost", "allowed", "blocked_by_other", "shadow_denied", "remaining"}
        for e in events
    )
    assert not any(e["shadow_denied"] for e in events), "an enforced limit denies"
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)

    last_two = api.get(path, params={"limit": 2}).json()["events"]
    assert last_two == events[-2:]
    assert api.get(path, params={"limit": 0}).json()["events"] == []
    assert_error(api.get(path, params={"limit": -1}), 400, "invalid_argument")
    assert_error(api.get(path, params={"limit": "many"}), 400, "invalid_argument")
    assert_error(api.get(f"/v1/history/{unique('nope')}"), 404, "limit_not_found")


def test_top_by_each_ordering(fresh: httpx.Client) -> None:
    # a: 3 allowed (cost 1 each), 0 denied; b: 1 allowed (cost 4), 2 denied (cost 3 each);
    # c: 0 allowed, 1 denied (cost 2).
    configure(fresh, "a", 10)
    configure(fresh, "b", 5)
    configure(fresh, "c", 2)
    configure(fresh, "idle", 2)
    for _ in range(3):
        check(fresh, "a")
    check(fresh, "b", cost=4)
    for _ in range(2):
        assert check(fresh, "b", cost=3)["allowed"] is False
    check(fresh, "c", cost=2)
    assert check(fresh, "c", cost=2)["allowed"] is False
    # c: 1 allowed (cost 2), 1 denied (cost 2).
    expected = {
        "denied": ["b", "c"],
        "allowed": ["a", "b", "c"],
        "denied_cost": ["b", "c"],
        "allowed_cost": ["b", "a", "c"],
        "checks": ["a", "b", "c"],
    }
    for by, order in expected.items():
        response = fresh.get("/v1/top", params={"by": by})
        assert response.status_code == 200, response.text
        top = response.json()["top"]
        assert [s["key"] for s in top] == order, by
        assert all(set(s) == STATUS_FIELDS for s in top)
        limited = fresh.get("/v1/top", params={"by": by, "limit": 1}).json()["top"]
        assert [s["key"] for s in limited] == order[:1]
    assert [s["key"] for s in fresh.get("/v1/top").json()["top"]] == expected["denied"], (
        "by denied by default"
    )
    assert_error(fresh.get("/v1/top", params={"by": "nonsense"}), 400, "invalid_argument")
    assert_error(fresh.get("/v1/top", params={"limit": "x"}), 400, "invalid_argument")


def test_flush_compact_and_doctor(server: Server, api: httpx.Client) -> None:
    key = unique("log")
    configure(api, key, 2)
    check(api, key)
    flushed = api.post("/v1/log/flush")
    assert flushed.status_code == 200
    assert flushed.json() == {"ok": True}

    compacted = api.post("/v1/log/compact")
    assert compacted.status_code == 200
    body = compacted.json()
    assert set(body) == {"keys", "snapshot_bytes", "log_bytes_before", "log_bytes_after"}
    assert body["keys"] >= 1
    assert body["snapshot_bytes"] > 0
    assert body["log_bytes_after"] <= body["log_bytes_before"]

    doctor = api.get("/v1/doctor")
    assert doctor.status_code == 200
    report = doctor.json()
    assert {"ok", "checks", "sync", "version", "data_dir", "log_bytes", "snapshot_bytes"} <= set(
        report
    )
    assert report["ok"] is True
    assert report["sync"] == "always"
    assert report["version"] == flint.__version__
    assert Path(report["data_dir"]).resolve() == server.data_dir.resolve()
    assert report["snapshot_bytes"] > 0
    assert report["checks"], "a list of checks"
    for c in report["checks"]:
        assert {"name", "ok", "detail"} <= set(c)
        assert c["ok"] is True, c
    # The status survived the compaction.
    assert api.get(f"/v1/limits/{quote(key, safe='')}").json()["remaining"] == 1


def test_metrics_are_prometheus_text_without_key_names(api: httpx.Client) -> None:
    secret = f"metrics-secret-{uuid.uuid4().hex}"
    configure(api, secret, 1)
    check(api, secret)
    api.post("/v1/check", json={"key": secret})  # a denial
    api.get(f"/v1/limits/{secret}-missing")  # a 404
    api.get(f"/v1/history/{secret}")
    response = api.get("/metrics")
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith(("text/plain", "application/openmetrics-text")), content_type
    text = response.text
    for name in [
        "flint_checks_total",
        "flint_http_errors_total",
        "flint_fsyncs_total",
        "flint_log_bytes",
        "flint_http_open_connections",
        "flint_http_request_duration_seconds",
    ]:
        assert re.search(rf"^{name}(_bucket|_count|_sum)?(\{{| )", text, re.M), name
    assert re.search(r'^flint_checks_total\{outcome="allowed"\} [1-9]', text, re.M)
    assert re.search(r'^flint_checks_total\{outcome="denied"\} [1-9]', text, re.M)
    # Every outcome shows from the start; the engine's template gauges too.
    assert re.search(r'^flint_checks_total\{outcome="shadow_denied"\} \d', text, re.M)
    assert re.search(r"^flint_templates \d+$", text, re.M)
    assert re.search(r"^flint_template_keys \d+$", text, re.M)
    assert re.search(r'^flint_http_errors_total\{code="limit_not_found"\} [1-9]', text, re.M)
    assert 'route="/v1/limits/{key}"' in text, "latency by route template"
    assert secret not in text, "no key names in the metrics"
    assert "metrics-secret" not in text


def test_openapi_is_3_1_and_lists_every_route(api: httpx.Client) -> None:
    response = api.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["version"] == flint.__version__
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "delete", "put", "patch"}
    }
    expected = {(method, re.sub(r"/auth:k$", "/{key}", path)) for method, path, _ in ROUTES}
    assert documented == expected
    assert "bearer" in document["components"]["securitySchemes"]


# -- auth --------------------------------------------------------------------------


def send(client: httpx.Client, method: str, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return client.request(method, path, json=body, **kwargs)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_route_but_health_needs_the_token(
    server: Server, method: str, path: str, body: Any
) -> None:
    with server.client(auth=False) as anonymous:
        if path == "/v1/health":
            assert send(anonymous, method, path, body).status_code == 200
            wrong = {"Authorization": "Bearer wrong"}
            assert send(anonymous, method, path, body, headers=wrong).status_code == 200
            return
        for headers in [
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": "Bearer"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Token {TOKEN}"},
            {"Authorization": TOKEN},
        ]:
            response = send(anonymous, method, path, body, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer"), headers
        # The scheme is case-insensitive.
        for scheme in ["Bearer", "bearer", "BEARER"]:
            with server.client() as api:
                limit = {"key": "auth:k", "rate": 5, "per": "1m"}
                api.post("/v1/limits", json=limit).raise_for_status()
            response = send(
                anonymous, method, path, body, headers={"Authorization": f"{scheme} {TOKEN}"}
            )
            assert response.status_code == 200, (scheme, response.text)


def test_unauthorized_unknown_routes_are_401_too(server: Server) -> None:
    with server.client(auth=False) as anonymous:
        assert_error(anonymous.get("/v1/nothing-here"), 401, "unauthorized")


# -- bad requests -------------------------------------------------------------------


def test_malformed_json_and_content_types(api: httpx.Client) -> None:
    json_type = {"Content-Type": "application/json"}
    for raw in [b"{", b"not json", b"", b"[]", b"null", b'{"key": "a",}']:
        response = api.post("/v1/check", content=raw, headers=json_type)
        assert_error(response, 400, "invalid_argument")
    body = json.dumps({"key": "a"}).encode()
    for headers in [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ]:
        response = api.post("/v1/check", content=body, headers=headers)
        error = assert_error(response, 400, "invalid_argument")
        assert "application/json" in error["message"]
    # A JSON subtype is JSON.
    key = unique("ctype")
    configure(api, key, 1)
    ok = api.post(
        "/v1/check",
        content=json.dumps({"key": key}).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/limits", {"rate": 1, "per": "1m"}),  # missing key
        ("/v1/limits", {"key": "x", "per": "1m"}),  # missing rate
        ("/v1/limits", {"key": "x", "rate": 1}),  # missing per
        ("/v1/limits", {"key": "x", "rate": -1, "per": "1m"}),
        ("/v1/limits", {"key": "x", "rate": 0, "per": "1m"}),
        ("/v1/limits", {"key": "x", "rate": 1.5, "per": "1m"}),
        ("/v1/limits", {"key": "x", "rate": True, "per": "1m"}),
        ("/v1/limits", {"key": "x", "rate": "5", "per": "1m"}),
        ("/v1/limits", {"key": "x", "rate": 2**64, "per": "1m"}),
        ("/v1/limits", {"key": "x", "rate": 1, "per": "1M"}),
        ("/v1/limits", {"key": "x", "rate": 1, "per": "10"}),
        ("/v1/limits", {"key": "x", "rate": 1, "per": 60}),
        ("/v1/limits", {"key": "x", "rate": 1, "per": "1m", "algorithm": "leaky"}),
        ("/v1/limits", {"key": "", "rate": 1, "per": "1m"}),
        ("/v1/limits", {"key": "x" * 1025, "rate": 1, "per": "1m"}),
        ("/v1/limits", {"key": 7, "rate": 1, "per": "1m"}),
        ("/v1/limits", {"key": "x", "rate": 1, "per": "1m", "window": 2}),  # unknown field
        ("/v1/check", {}),
        ("/v1/check", {"key": "x", "cost": 1.5}),
        ("/v1/check", {"key": "x", "cost": -1}),
        ("/v1/check", {"key": "x", "cost": True}),
        ("/v1/check", {"key": "x", "cost": None}),
        ("/v1/check", {"key": None}),
        ("/v1/check", {"key": "x", "extra": 1}),
        # serde reads a struct from an array of its field values too: the API takes
        # objects only, so that a client's mistake cannot consume quota.
        ("/v1/check", ["x"]),
        ("/v1/check", ["x", 1]),
        ("/v1/limits", ["x", 1, "1m"]),
        ("/v1/limits", {"key": "x", "rate": 1, "per": "1m", "burst": 1.5}),
        ("/v1/limits", {"key": "x", "rate": 1, "per": "1m", "burst": -1}),
        ("/v1/limits", {"key": "x", "rate": 1, "per": "1m", "burst": "5"}),
        ("/v1/check-all", [[{"key": "x"}]]),
        ("/v1/check-all", {"items": [["x", 1]]}),
        ("/v1/reset", ["x"]),
        ("/v1/check-all", {}),
        ("/v1/check-all", {"items": "x"}),
        ("/v1/check-all", {"items": ["x"]}),
        ("/v1/check-all", {"items": [{"key": "x", "cost": 0.5}]}),
        ("/v1/check-all", {"items": [{"key": "x", "weight": 1}]}),
        ("/v1/check-all", {"items": [], "extra": True}),
        ("/v1/reset", {}),
        ("/v1/reset", {"key": 1}),
        ("/v1/reset", {"key": "x", "hard": True}),
        ("/v1/refund", ["x", 1]),
        ("/v1/refund", {}),
        ("/v1/refund", {"key": "x", "cost": 0.5}),
        ("/v1/refund", {"key": "x", "cost": -1}),
        ("/v1/refund", {"key": "x", "units": 1}),
    ],
)
def test_bad_bodies_are_400_json(api: httpx.Client, path: str, body: Any) -> None:
    # The key "x" stands for one that exists, so that a body taken for a valid one
    # would be answered 200.
    key = unique("bad")
    configure(api, key, 1_000_000)
    raw = json.dumps(body).replace('"x"', json.dumps(key)).encode()
    headers = {"Content-Type": "application/json"}
    assert_error(api.post(path, content=raw, headers=headers), 400, "invalid_argument")
    status = api.get(f"/v1/limits/{quote(key, safe='')}").json()
    assert (status["allowed"], status["denied"]) == (0, 0), "nothing consumed or recorded"


def test_unknown_route_and_wrong_method(api: httpx.Client) -> None:
    for path in ["/v1/nothing", "/", "/v2/check", "/v1/limits/a/b/extra/../x?y=1"]:
        response = api.get(path)
        if path.startswith("/v1/limits/"):
            continue  # a key with slashes; covered below
        assert_error(response, 404, "not_found")
    for method, path in [
        ("PUT", "/v1/check"),
        ("GET", "/v1/check"),
        ("DELETE", "/v1/limits"),
        ("PATCH", "/v1/limits/x"),
        ("POST", "/v1/health"),
        ("GET", "/v1/log/flush"),
        ("POST", "/v1/doctor"),
        ("POST", "/metrics"),
        ("OPTIONS", "/v1/check"),
    ]:
        assert_error(api.request(method, path), 405, "method_not_allowed")


def test_a_body_over_64_kib_is_413(api: httpx.Client) -> None:
    big = json.dumps({"key": "x" * (70 * 1024)}).encode()
    headers = {"Content-Type": "application/json"}
    assert_error(api.post("/v1/check", content=big, headers=headers), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    chunked = api.post("/v1/check", content=chunks(), headers=headers)
    assert_error(chunked, 413, "payload_too_large")

    # A chunked body under the limit is fine.
    key = unique("chunked")
    configure(api, key, 1)

    def small() -> Iterator[bytes]:
        yield b'{"key": '
        yield json.dumps(key).encode() + b"}"

    assert api.post("/v1/check", content=small(), headers=headers).json()["allowed"] is True


def test_check_all_over_the_item_cap_is_400(tmp_path: Path) -> None:
    # 4,097 distinct keys, configured in the engine before the server opens the directory.
    keys = [base36(i) for i in range(4097)]
    with flint.Limiter(data_dir=tmp_path / ".flint", sync="batch") as limiter:
        for key in keys:
            limiter.limit(key, rate=1, per="1h")
    with running_server(tmp_path / ".flint", token=TOKEN) as server, server.client() as api:
        items = [{"key": k} for k in keys]
        body = json.dumps({"items": items}, separators=(",", ":")).encode()
        assert len(body) < 64 * 1024, "under the body limit, so the engine's cap answers"
        response = api.post(
            "/v1/check-all", content=body, headers={"Content-Type": "application/json"}
        )
        error = assert_error(response, 400, "invalid_argument")
        assert "4096" in error["message"]
        at_cap = json.dumps({"items": items[:4096]}, separators=(",", ":")).encode()
        ok = api.post("/v1/check-all", content=at_cap, headers={"Content-Type": "application/json"})
        assert ok.status_code == 200
        assert ok.json()["allowed"] is True
        assert len(ok.json()["results"]) == 4096


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


# -- keys in paths -------------------------------------------------------------------

ODD_KEYS = [
    "route:/v1/chat",
    "a/b/c",
    "/leading",
    "trailing/",
    "user:42",
    "with space",
    "100%",
    "%2F",
    "a%20b",
    "ключ:ü/日本",
    "emoji 🚀",
    "q?x=1&y#frag",
    "plus+sign",
    "semi;colon",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_keys_with_odd_characters_in_paths(api: httpx.Client, key: str) -> None:
    key = (
        f"{key}-{uuid.uuid4().hex[:6]}"
        if not key.endswith("/")
        else f"{uuid.uuid4().hex[:6]}-{key}"
    )
    configure(api, key, 3)
    check(api, key)
    encoded = quote(key, safe="")
    forms = [encoded]
    if "/" in key:
        forms.append(quote(key, safe="/"))  # the slashes raw
    for form in forms:
        status = api.get(f"/v1/limits/{form}")
        assert status.status_code == 200, (form, status.text)
        assert status.json()["key"] == key
        assert status.json()["remaining"] == 2
        history = api.get(f"/v1/history/{form}", params={"limit": 5})
        assert history.status_code == 200, (form, history.text)
        assert history.json()["key"] == key
        assert len(history.json()["events"]) == 1
    deleted = api.delete(f"/v1/limits/{forms[-1]}")
    assert deleted.status_code == 200, deleted.text
    assert_error(api.get(f"/v1/limits/{encoded}"), 404, "limit_not_found")


def test_unknown_keys_in_paths_are_404_limit_not_found(api: httpx.Client) -> None:
    for key in ["never-configured", "a/b", "ü"]:
        for method, prefix in [
            ("GET", "/v1/limits/"),
            ("DELETE", "/v1/limits/"),
            ("GET", "/v1/history/"),
        ]:
            response = api.request(method, prefix + quote(key, safe=""))
            error = assert_error(response, 404, "limit_not_found")
            assert key in error["message"] or json.dumps(key) in error["message"]


def test_invalid_utf8_in_a_path_key_is_400(api: httpx.Client) -> None:
    assert_error(api.get("/v1/limits/%FF%FE"), 400, "invalid_argument")


# -- templates and shadow limits -----------------------------------------------------


def metric(text: str, series: str) -> float:
    """The value of one series of the metrics text (0 when absent)."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def limits(api: httpx.Client, **params: str) -> list[str]:
    response = api.get("/v1/limits", params=params)
    assert response.status_code == 200, response.text
    return [s["key"] for s in response.json()["limits"]]


def test_a_template_limits_every_key_it_covers(fresh: httpx.Client) -> None:
    created = configure(fresh, "ip:*", 2)
    assert created["change"] == "created"
    assert set(created["status"]) == STATUS_FIELDS
    assert (created["status"]["key"], created["status"]["template"]) == ("ip:*", None)
    configure(fresh, "ip:10.*", 5)
    configure(fresh, "ip:own", 1)

    # No `POST /v1/limits` for the keys: the longest prefix wins, an own limit beats it.
    first = check(fresh, "ip:1.2.3.4")
    assert set(first) == RESULT_FIELDS
    assert (first["allowed"], first["limit"], first["remaining"]) == (True, 2, 1)
    assert check(fresh, "ip:10.0.0.1")["limit"] == 5
    assert check(fresh, "ip:own")["limit"] == 1
    assert check(fresh, "ip:1.2.3.4")["allowed"] is True
    assert check(fresh, "ip:1.2.3.4")["allowed"] is False, "each key has its own units"
    assert check(fresh, "ip:5.6.7.8")["allowed"] is True

    status = fresh.get("/v1/limits/ip:1.2.3.4").json()
    assert set(status) == STATUS_FIELDS
    assert (status["template"], status["remaining"], status["denied"]) == ("ip:*", 0, 1)
    untouched = fresh.get("/v1/limits/ip:9.9.9.9")
    assert untouched.status_code == 200, "a covered key without state has a status"
    assert (untouched.json()["template"], untouched.json()["remaining"]) == ("ip:*", 2)
    assert fresh.get("/v1/limits/ip:own").json()["template"] is None
    assert_error(fresh.get("/v1/limits/other:1"), 404, "limit_not_found")

    assert limits(fresh, kind="templates") == ["ip:*", "ip:10.*"]
    assert limits(fresh, kind="keys") == ["ip:1.2.3.4", "ip:10.0.0.1", "ip:5.6.7.8", "ip:own"]
    assert (
        limits(fresh, kind="all")
        == limits(fresh)
        == sorted(["ip:*", "ip:10.*", "ip:1.2.3.4", "ip:10.0.0.1", "ip:5.6.7.8", "ip:own"])
    )
    assert limits(fresh, kind="keys", prefix="ip:1") == ["ip:1.2.3.4", "ip:10.0.0.1"]
    assert fresh.get("/v1/top").json()["top"][0]["key"] == "ip:1.2.3.4"
    history = fresh.get("/v1/history/ip:1.2.3.4").json()["events"]
    assert [e["allowed"] for e in history] == [True, True, False]

    doctor = fresh.get("/v1/doctor").json()
    assert {"templates", "memory_bytes", "process_resident_bytes"} <= set(doctor)
    by_template = {t["template"]: t for t in doctor["templates"]}
    assert set(by_template) == {"ip:*", "ip:10.*"}
    assert by_template["ip:*"]["live_keys"] == 2
    assert set(by_template["ip:*"]) == {"template", "live_keys", "remembered_keys"}
    assert doctor["memory_bytes"] > 0

    text = fresh.get("/metrics").text
    assert metric(text, "flint_templates") == 2
    assert metric(text, "flint_template_keys") == 3

    # The template's new limit applies to its live keys; removing it removes them.
    configure(fresh, "ip:*", 10)
    assert fresh.get("/v1/limits/ip:1.2.3.4").json()["rate"] == 10
    assert fresh.delete("/v1/limits/ip:*").json() == {"ok": True}
    assert limits(fresh, kind="templates") == ["ip:10.*"]
    assert_error(fresh.get("/v1/limits/ip:1.2.3.4"), 404, "limit_not_found")
    assert_error(fresh.post("/v1/check", json={"key": "ip:1.2.3.4"}), 404, "limit_not_found")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/check", {"key": "tpl:*"}),
        ("/v1/peek", {"key": "tpl:*"}),
        ("/v1/acquire", {"key": "tpl:*", "timeout": 0}),
        ("/v1/refund", {"key": "tpl:*"}),
        ("/v1/check-all", {"items": [{"key": "tpl:a"}, {"key": "tpl:*"}]}),
    ],
)
def test_a_template_is_not_a_key_to_check(api: httpx.Client, path: str, body: Any) -> None:
    configure(api, "tpl:*", 3)
    error = assert_error(api.post(path, json=body), 400, "invalid_argument")
    assert '"tpl:*"' in error["message"] and "template" in error["message"], error
    assert "check a key it covers" in error["message"], error
    assert api.get("/v1/limits/tpl:a").json()["allowed"] == 0, "nothing was consumed"


def test_a_bad_kind_or_mode_is_400_naming_the_choices(api: httpx.Client) -> None:
    error = assert_error(api.get("/v1/limits", params={"kind": "nope"}), 400, "invalid_argument")
    assert '"nope"' in error["message"] and "all, keys, templates" in error["message"], error
    key = unique("mode")
    response = api.post("/v1/limits", json={"key": key, "rate": 1, "per": "1m", "mode": "loud"})
    error = assert_error(response, 400, "invalid_argument")
    assert '"loud"' in error["message"] and "shadow" in error["message"], error
    assert_error(api.get(f"/v1/limits/{key}"), 404, "limit_not_found")


def test_a_shadow_limit_allows_and_counts_what_it_would_deny(fresh: httpx.Client) -> None:
    created = configure(fresh, "s", 1, mode="shadow")["status"]
    assert (created["mode"], created["shadow_denied"]) == ("shadow", 0)
    assert configure(fresh, "s", 1, mode="shadow")["change"] == "unchanged"
    assert configure(fresh, "e", 1)["status"]["mode"] == "enforce"

    first = check(fresh, "s")
    assert (first["allowed"], first["shadow_denied"]) == (True, False)
    second = check(fresh, "s")
    assert (second["allowed"], second["shadow_denied"], second["remaining"]) == (True, True, 0)
    peeked = fresh.post("/v1/peek", json={"key": "s"}).json()
    assert (peeked["allowed"], peeked["shadow_denied"]) == (True, True)
    both = fresh.post("/v1/check-all", json={"items": [{"key": "s"}, {"key": "e"}]}).json()
    assert both["allowed"] is True
    assert [r["shadow_denied"] for r in both["results"]] == [True, False]
    assert check(fresh, "e")["allowed"] is False
    assert check(fresh, "e")["shadow_denied"] is False

    status = fresh.get("/v1/limits/s").json()
    assert (status["mode"], status["allowed"], status["denied"], status["shadow_denied"]) == (
        "shadow",
        1,
        0,
        2,
    )
    events = fresh.get("/v1/history/s").json()["events"]
    assert [e["shadow_denied"] for e in events] == [False, True, True]
    assert all(set(e) >= {"shadow_denied", "allowed"} and e["allowed"] for e in events)
    top = fresh.get("/v1/top", params={"by": "shadow_denied"}).json()["top"]
    assert [s["key"] for s in top] == ["s"]

    text = fresh.get("/metrics").text
    assert metric(text, 'flint_checks_total{outcome="shadow_denied"}') == 2
    assert metric(text, 'flint_checks_total{outcome="allowed"}') == 2
    assert metric(text, 'flint_checks_total{outcome="denied"}') == 2

    # Enforced again: the key is out of units, so the next check is denied.
    assert configure(fresh, "s", 1, mode="enforce")["status"]["mode"] == "enforce"
    assert check(fresh, "s")["allowed"] is False


def test_the_openapi_document_describes_templates_and_shadow(api: httpx.Client) -> None:
    document = api.get("/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "mode" in schemas["LimitRequest"]["properties"]
    assert {"mode", "template", "shadow_denied"} <= set(schemas["KeyStatus"]["properties"])
    assert "shadow_denied" in schemas["CheckResult"]["properties"]
    assert "shadow_denied" in schemas["HistoryEntry"]["properties"]
    assert {"templates", "memory_bytes"} <= set(schemas["Doctor"]["properties"])
    parameters = document["paths"]["/v1/limits"]["get"]["parameters"]
    assert {p["name"] for p in parameters} == {"prefix", "kind"}
