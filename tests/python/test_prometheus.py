"""flint.prometheus: the metrics text of an embedded limiter, its route on a
Starlette/FastAPI app, and the Grafana dashboard and alert rules, every query of
which names a metric the code exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fastapi
import httpx
import pytest
import starlette.applications
import yaml
from server_process import Server

import flint
import flint.prometheus
from flint import _native

from conftest import shared_limiter

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "flint-dashboard.json"
ALERTS = ROOT / "docs" / "grafana" / "alerts.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"


def series(text: str, name: str) -> float | None:
    """The value of one series (``name{labels}`` as written), if present."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == name:
            return float(value)
    return None


def sample_names(text: str) -> set[str]:
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture
def busy(limiter: flint.Limiter) -> flint.Limiter:
    """A limiter with a template, a shadow limit and known checks: 4 allowed, 2 denied
    (one a check-all item), 1 shadow-denied."""
    limiter.limit("ip:*", rate=2, per="1h")
    limiter.limit("s", rate=1, per="1h", mode="shadow")
    for _ in range(3):
        limiter.check("ip:1.2.3.4")  # allowed, allowed, denied
    limiter.check("ip:5.6.7.8")  # allowed
    limiter.check("s")  # allowed
    limiter.check("s")  # shadow-denied
    assert not limiter.check_all(["ip:5.6.7.8", "ip:9.9.9.9", "ip:1.2.3.4"])["allowed"]
    return limiter


def test_metrics_text_counts_exact_values(busy: flint.Limiter) -> None:
    text = flint.prometheus.metrics_text(busy)
    assert text.endswith("# EOF\n")
    assert series(text, 'flint_checks_total{outcome="allowed"}') == 4
    # The denied check-all counts each of its three items as denied.
    assert series(text, 'flint_checks_total{outcome="denied"}') == 4
    assert series(text, 'flint_checks_total{outcome="shadow_denied"}') == 1
    # A template's counters sum its keys': only the key that lacked room counts the
    # check-all's denial; the others were blocked by it.
    assert series(text, 'flint_template_checks_total{template="ip:*",outcome="allowed"}') == 3
    assert series(text, 'flint_template_checks_total{template="ip:*",outcome="denied"}') == 2
    assert series(text, 'flint_template_checks_total{template="ip:*",outcome="shadow_denied"}') == 0
    assert series(text, "flint_templates") == 1
    # The denied check-all made ip:9.9.9.9, at full capacity until a sweep drops it.
    busy.sweep()
    text = flint.prometheus.metrics_text(busy)
    assert series(text, "flint_template_keys") == 2
    assert series(text, "flint_keys") == 4  # the template, its two keys, "s"
    assert (series(text, "flint_log_bytes") or 0) > 0
    assert (series(text, "flint_fsyncs_total") or 0) > 0
    assert series(text, "flint_compactions_total") == 0
    assert "1.2.3.4" not in text, "no key names unless asked for"
    assert sample_names(text) <= set(flint.prometheus.METRIC_NAMES)
    busy.compact()
    after = flint.prometheus.metrics_text(busy)
    assert series(after, "flint_compactions_total") == 1
    assert (series(after, "flint_snapshot_bytes") or 0) > 0


def test_per_key_series_are_opt_in_and_capped(busy: flint.Limiter) -> None:
    busy.limit("k:*", rate=100, per="1h")
    for i in range(6):
        for _ in range(10 + i):
            busy.check(f"k:{i}")
    text = flint.prometheus.metrics_text(busy, per_key=2)
    keys = {m.group(1) for m in re.finditer(r'^flint_key_checks_total\{key="([^"]+)"', text, re.M)}
    assert keys == {"k:5", "k:4"}, text
    assert series(text, 'flint_key_checks_total{key="k:5",outcome="allowed"}') == 15
    assert "flint_key_checks_total" not in flint.prometheus.metrics_text(busy)
    for bad in (0, -1, True, 1.5, "10"):
        with pytest.raises(flint.InvalidArgument, match="per_key"):
            flint.prometheus.metrics_text(busy, per_key=bad)  # type: ignore[arg-type]


def test_the_native_function_and_the_names_come_from_rust(busy: flint.Limiter) -> None:
    native = _native.metrics_text(busy, 1)
    assert series(native, 'flint_key_checks_total{key="ip:1.2.3.4",outcome="denied"}') == 2
    assert series(native, 'flint_checks_total{outcome="allowed"}') == 4
    names = flint.prometheus.METRIC_NAMES
    assert len(names) == len(set(names))
    assert {
        "flint_checks_total",
        "flint_template_checks_total",
        "flint_key_checks_total",
        "flint_fsyncs_total",
        "flint_fsync_seconds_total",
        "flint_log_bytes",
        "flint_http_request_duration_seconds",
    } <= set(names)
    assert set(flint.prometheus.METRIC_HISTOGRAMS) == {"flint_http_request_duration_seconds"}
    assert flint.prometheus.CONTENT_TYPE.startswith("application/openmetrics-text")


def test_a_closed_limiter_or_a_shared_one_is_refused(
    busy: flint.Limiter, flint_server: Server
) -> None:
    with shared_limiter(flint_server) as shared:
        with pytest.raises(TypeError, match=r"/metrics"):
            flint.prometheus.metrics_text(shared)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"/metrics"):
            flint.prometheus.add_metrics_route(fastapi.FastAPI(), shared)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        flint.prometheus.metrics_text("not a limiter")  # type: ignore[arg-type]
    busy.close()
    with pytest.raises(flint.FlintError):
        flint.prometheus.metrics_text(busy)


def test_importing_the_module_imports_no_web_framework() -> None:
    code = (
        "import sys, flint.prometheus; "
        "bad = [m for m in ('starlette', 'fastapi') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(params=["fastapi", "starlette"])
def app_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


async def test_add_metrics_route_serves_the_text(busy: flint.Limiter, app_kind: str) -> None:
    app = fastapi.FastAPI() if app_kind == "fastapi" else starlette.applications.Starlette()
    flint.prometheus.add_metrics_route(app, busy)
    flint.prometheus.add_metrics_route(app, busy, path="/internal/metrics", per_key=1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == flint.prometheus.CONTENT_TYPE
        assert series(response.text, 'flint_checks_total{outcome="allowed"}') == 4
        assert "flint_key_checks_total" not in response.text
        assert not busy.check("ip:1.2.3.4").allowed  # the next scrape sees it
        again = await client.get("/metrics")
        assert series(again.text, 'flint_checks_total{outcome="denied"}') == 5
        capped = await client.get("/internal/metrics")
        assert capped.status_code == 200
        assert (
            len(re.findall(r'^flint_key_checks_total\{.*outcome="allowed"', capped.text, re.M)) == 1
        )
        assert (await client.post("/metrics")).status_code == 405
    if app_kind == "fastapi":
        assert "/metrics" not in app.openapi()["paths"]


# -- the dashboard and the alert rules --------------------------------------------

# PromQL words that are not metric names.
PROMQL_WORDS = {"by", "without", "and", "or", "unless", "bool", "offset", "on", "ignoring"}
PROMQL_WORDS |= {"group_left", "group_right", "inf", "nan"}


def metric_names_in(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions,
    keywords, label names (inside ``{}`` or ``by (...)``) or values (strings, ranges,
    durations, Grafana variables)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def exported() -> set[str]:
    names = set(flint.prometheus.METRIC_NAMES)
    for histogram in flint.prometheus.METRIC_HISTOGRAMS:
        names |= {f"{histogram}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
    return names | {"up"}


def test_the_name_parser_finds_names_and_skips_the_rest() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) "
        '(rate(flint_http_request_duration_seconds_bucket{job=~"$job"}[5m])))'
        ' / on (job) rate(flint_fsyncs_total[5m]) > 0 and up{job="flint"} == 0'
    )
    assert metric_names_in(expr) == {
        "flint_http_request_duration_seconds_bucket",
        "flint_fsyncs_total",
        "up",
    }
    assert metric_names_in('topk(10, flint_nope{outcome="denied"})') == {"flint_nope"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        exprs += [t["expr"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", variable["definition"]))
    return exprs


def test_the_dashboard_is_grafana_json_whose_queries_name_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    assert any(
        v["type"] == "datasource" and v["query"] == "prometheus"
        for v in dashboard["templating"]["list"]
    )
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
    exprs = dashboard_exprs()
    used: set[str] = set()
    for expr in exprs:
        names = metric_names_in(expr)
        assert names, expr
        assert names <= exported(), f"{expr}: {names - exported()} not exported"
        used |= names
    text = " ".join(exprs)
    # The panels the issue asks for.
    assert re.search(r"rate\(flint_checks_total\{[^}]*\}\[5m\]\)", text)
    assert re.search(r'topk\(10, .*flint_template_checks_total\{[^}]*outcome="denied"', text)
    assert "flint_fsync_seconds_total" in used and "flint_fsyncs_total" in used
    assert "flint_log_bytes" in used
    assert "histogram_quantile" in text and "flint_http_request_duration_seconds_bucket" in used


def test_the_alert_rules_are_prometheus_yaml_whose_expressions_name_exported_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    assert {"FlintDenialSpike", "FlintDown", "FlintStorageErrors"} <= set(alerts)
    for name, rule in alerts.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, (
            name
        )
        names = metric_names_in(rule["expr"])
        assert names and names <= exported(), f"{name}: {names - exported()} not exported"
    assert re.search(r'up\{job="flint"\} == 0', alerts["FlintDown"]["expr"])
    assert 'outcome="denied"' in alerts["FlintDenialSpike"]["expr"]
    storage = alerts["FlintStorageErrors"]["expr"]
    assert "flint_http_errors_total" in storage and "storage_error" in storage


def test_every_exported_metric_is_documented() -> None:
    doc = METRICS_DOC.read_text()
    for name in flint.prometheus.METRIC_NAMES:
        assert f"`{name}" in doc, name
    assert "flint-dashboard.png" in doc
    assert (ROOT / "docs" / "grafana" / "flint-dashboard.png").stat().st_size > 10_000
