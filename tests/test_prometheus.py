"""deploy/prometheus.yml and deploy/grafana/gateway.json, tried for real.

``promtool`` checks the shipped scrape configuration; a real Prometheus (Debian's ``prometheus``
package, which ``scripts/test`` installs) scrapes a running node over mutual TLS with an operator's
certificate made by ``gateway certs issue --operator`` and answers ``/api/v1/query``; every query of
the Grafana dashboard names metrics and labels the gateway exports, and that Prometheus evaluates
each one. Without the package the Prometheus tests skip, saying why; in CI (``CI=true``) they fail.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.domain.vocabulary import Priority
from gateway.operators.metrics import CertExpiry, Metrics
from gateway.operators.readmodel import FeedEvent, QueueDepth
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, I01, make_package, wait_delivered
from tests.oversight_helpers import gateway
from tests.processes import free_port

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "deploy" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "gateway.json"
SCRAPER = "PROMETHEUS"  # the operator name deploy/prometheus.yml expects


def tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    reason = (
        f"{name} is not installed: it comes with Debian's prometheus package, which ./scripts/test "
        "installs when it may: as root or with sudo -n (else: apt-get install prometheus)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; in CI this test must run, not skip")
    pytest.skip(reason)


def shipped_copy(home: Path) -> Path:
    """deploy/prometheus.yml placed in the home as in a checkout: its ``../certs_dev/...`` paths
    resolve to the home's PKI."""
    target = home / "deploy" / "prometheus.yml"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(SHIPPED, target)
    return target


async def issue_scraper_certificate(home: Path) -> None:
    done = await gateway(home, "certs", "issue", "--operator", SCRAPER)
    assert done.returncode == 0, done.stderr
    assert (home / "certs_dev" / "operators" / SCRAPER / "tls.key").is_file()


@pytest.mark.slow
async def test_promtool_accepts_the_shipped_config_once_its_files_exist(home: Path) -> None:
    promtool = tool("promtool")
    config = shipped_copy(home)

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
        )

    before = await asyncio.to_thread(check)  # promtool checks that the certificate files exist
    assert before.returncode != 0 and f"operators/{SCRAPER}/tls.crt" in before.stdout + before.stderr
    await issue_scraper_certificate(home)
    after = await asyncio.to_thread(check)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "SUCCESS" in after.stdout


def scrape_config(shipped: Path, port: int) -> dict[str, Any]:
    """The shipped configuration aimed at the node under test, scraping every second, plus a job
    that presents no client certificate (the node must refuse it)."""
    data: dict[str, Any] = yaml.safe_load(shipped.read_text())
    (job,) = [j for j in data["scrape_configs"] if j["job_name"] == "gateway"]
    data["global"]["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"  # (may not exceed the interval)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    anonymous = copy.deepcopy(job)
    anonymous["job_name"] = "gateway-without-certificate"
    anonymous["tls_config"] = {"ca_file": job["tls_config"]["ca_file"]}
    data["scrape_configs"] = [job, anonymous]
    return data


@pytest.fixture
async def prometheus(node: Node, config: Config, tmp_path: Path) -> AsyncIterator[str]:
    """A real Prometheus on a free loopback port scraping ``node``; yields its base URL."""
    binary = tool("prometheus")
    await issue_scraper_certificate(config.home)
    generated = config.home / "deploy" / "scrape-test.yml"  # beside the copy: same relative paths
    generated.parent.mkdir(exist_ok=True)
    generated.write_text(yaml.safe_dump(scrape_config(SHIPPED, node.port)))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={generated}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                if proc.poll() is not None:
                    raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log.read_text()}")
                try:
                    async with session.get(base + "/-/ready") as reply:
                        if reply.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"prometheus not ready after 30 s:\n{log.read_text()}")
        yield base
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def api(session: aiohttp.ClientSession, base: str, path: str, **params: str) -> Any:
    async with session.get(base + path, params=params) as reply:
        body = await reply.json()
    assert body["status"] == "success", body
    return body["data"]


@pytest.mark.slow
async def test_real_prometheus_scrapes_the_node_over_mutual_tls(
    node: Node, config: Config, agency: Any, prometheus: str
) -> None:
    sent = {Priority.THUONG: 2, Priority.HOA_TOC: 3}
    for priority, count in sent.items():
        for n in range(count):
            recipient = A01 if n % 2 else I01
            package = make_package(config, G22, [recipient], priority=priority, subject=f"Đo {priority} {n}")
            status, body = await agency(G22).send(package)
            assert status == 202, body
            await wait_delivered(node, body["id"])

    async with aiohttp.ClientSession() as session:
        expected = {str(int(p)): float(c) for p, c in sent.items()}
        got: dict[str, float] = {}
        for _ in range(120):  # scraped every second; a scrape may have been under way as we sent
            result = await api(session, prometheus, "/api/v1/query", query="gateway_documents_accepted_total")
            got = {r["metric"]["priority"]: float(r["value"][1]) for r in result["result"]}
            if got == expected:
                break
            await asyncio.sleep(0.5)
        else:
            targets = await api(session, prometheus, "/api/v1/targets")
            errors = [(t["scrapePool"], t["health"], t["lastError"]) for t in targets["activeTargets"]]
            raise AssertionError(f"Prometheus has {got}, expected {expected}; targets: {errors}")
        assert sum(got.values()) == sum(sent.values())
        for series in result["result"]:
            labels = series["metric"]
            assert labels["job"] == "gateway" and labels["instance"] == f"127.0.0.1:{node.port}"
            assert (labels["network"], labels["kind"]) == ("government", "edoc")  # the sender's network

        targets = {
            t["scrapePool"]: t for t in (await api(session, prometheus, "/api/v1/targets"))["activeTargets"]
        }
        assert targets["gateway"]["health"] == "up"
        assert targets["gateway"]["scrapeUrl"] == f"https://127.0.0.1:{node.port}/metrics"
        # Without an operator's certificate the very same scrape is refused: the mTLS is what lets it in.
        for _ in range(60):
            if targets["gateway-without-certificate"]["health"] != "unknown":
                break
            await asyncio.sleep(0.5)
            listed = (await api(session, prometheus, "/api/v1/targets"))["activeTargets"]
            targets = {t["scrapePool"]: t for t in listed}
        refused = targets["gateway-without-certificate"]
        assert refused["health"] == "down" and "401" in refused["lastError"], refused

        # Every query of the Grafana dashboard is PromQL that this Prometheus evaluates.
        for expr in dashboard_queries(json.loads(DASHBOARD.read_text())):
            concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
            data = await api(session, prometheus, "/api/v1/query", query=concrete)
            assert data["resultType"] in ("vector", "scalar"), (expr, data)
        expiry = await api(
            session, prometheus, "/api/v1/query", query="min by (owner) (gateway_certificate_expiry_days)"
        )
        owners = {r["metric"]["owner"] for r in expiry["result"]}
        assert {"ROOT.CA", "gateway", f"OPERATOR.{SCRAPER}"} <= owners


# --- the Grafana dashboard ---------------------------------------------------------------------

PROMQL_FUNCTIONS = {
    "abs", "absent", "avg", "avg_over_time", "ceil", "changes", "clamp_min", "count", "delta",
    "deriv", "floor", "histogram_quantile", "increase", "irate", "label_values", "max",
    "max_over_time", "min", "min_over_time", "quantile", "rate", "resets", "round", "scalar",
    "sort", "sort_desc", "sum", "time", "topk", "bottomk", "vector",
}  # fmt: skip
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}
SCRAPE_LABELS = {"instance", "job"}


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", [])]


def promql_names(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(metric names, label names, functions) an expression refers to: a small reading of PromQL,
    enough for the dashboard's queries, that fails loudly on what it does not know."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for grouping in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels |= {name.strip() for name in grouping.split(",") if name.strip()}
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    metrics: set[str] = set()
    functions: set[str] = set()
    # A name followed by "(" (or, for an aggregation, by "by"/"without") is called, else a metric.
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*(?:\(|(?:by|without)\b))?", text):
        name, call = match.group(1), match.group(2)
        if call:
            functions.add(name)
        elif name not in PROMQL_WORDS:
            metrics.add(name)
    return metrics, labels, functions


def exported_series() -> dict[str, set[str]]:
    """Every series name /metrics can show, with its label names, from a node's metrics that have
    seen each kind of record (a family with no samples would hide its labels)."""
    now = datetime.now(UTC)

    def event(kind: str, **extra: Any) -> FeedEvent:
        fields: dict[str, Any] = {
            "seq": 1, "kind": kind, "at": now, "document": "d" * 32, "recipient": A01,
            "network": "party", "request_id": "r", "detail": {}, "priority": 3,
            "sender_network": "government", "document_kind": "edoc",
            "accepted_at": now - timedelta(seconds=2),
        }  # fmt: skip
        return FeedEvent(**{**fields, **extra})

    metrics = Metrics()
    metrics.observe(
        [
            event("accepted", network="government"),
            event("bridged", detail={"from": "government", "to": "party"}),
            event("delivered"),
            event("failed"),
        ]
    )
    metrics.edge.refused["total"] += 1
    metrics.edge.timeouts["body"] += 1
    text = metrics.render(
        queue=[QueueDepth("party", 3, 1)],
        certificates=[CertExpiry("ROOT.CA", "ca", now + timedelta(days=9), 9.0)],
        audit_unsigned=1,
        audit_last_signed=now,
        at_risk=[("party", "overdue")],
    )
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_grafana_dashboard_is_valid_json_and_queries_only_what_the_gateway_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())  # valid JSON, or this raises
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    panels = list(dashboard_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    exported = exported_series()
    used: set[str] = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel.get("title")
        assert (
            set(panel["gridPos"]) == {"h", "w", "x", "y"}
            and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        )
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for variable in re.findall(r"\$\{?(\w+)", expr):
                assert variable in variables or variable in GRAFANA_VARIABLES, (panel["title"], variable)
            metrics, labels, functions = promql_names(expr)
            assert metrics, (panel["title"], expr)
            unknown = metrics - set(exported)
            assert not unknown, f"{panel['title']}: {sorted(unknown)} is not a metric the gateway exports"
            assert functions <= PROMQL_FUNCTIONS, (panel["title"], functions - PROMQL_FUNCTIONS)
            available = set().union(*(exported[m] for m in metrics)) | SCRAPE_LABELS
            assert labels <= available, (
                f"{panel['title']}: labels {sorted(labels - available)} are not exported"
            )
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= available, (panel["title"], legend - available)
            used |= metrics
    # The panels the operators asked for: rates by network and priority, queue, latency, expiry, errors.
    assert {
        "gateway_documents_accepted_total",
        "gateway_documents_delivered_total",
        "gateway_queue_depth",
        "gateway_delivery_latency_seconds_bucket",
        "gateway_certificate_expiry_days",
        "gateway_documents_failed_total",
    } <= used


def test_the_promql_reading_catches_a_misspelt_metric_and_label() -> None:
    metrics, labels, functions = promql_names(
        "histogram_quantile(0.95, sum by (le, prority) "
        '(rate(gateway_delivery_latncy_seconds_bucket{instance=~"$x"}[5m])))'
    )
    assert metrics == {"gateway_delivery_latncy_seconds_bucket"}
    assert labels == {"le", "prority", "instance"}
    assert functions == {"histogram_quantile", "sum", "rate"}
    assert "gateway_delivery_latncy_seconds_bucket" not in exported_series()
