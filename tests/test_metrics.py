"""`/metrics` read by the Prometheus client's own parser, and the JSON log lines."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.domain.vocabulary import Priority
from gateway.operators.logs import JsonFormatter
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, I01, client_context, make_package, wait_delivered
from tests.oversight_helpers import operator, operator_session, settle
from tests.test_classified import CONTENT, SUBJECT, classified_package


def samples(
    families: dict[str, Metric], name: str, suffix: str = ""
) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value for s in families[name].samples if s.name == name + suffix
    }


async def test_metrics_are_prometheus_text_that_the_official_parser_reads(node: Node, config: Config, agency):
    for recipient, priority in ((A01, Priority.THUONG), (I01, Priority.HOA_TOC), (A01, Priority.HOA_TOC)):
        pkg = make_package(config, G22, [recipient], priority=priority, subject=f"Đo {recipient} {priority}")
        status, body = await agency(G22).send(pkg)
        assert status == 202
        await wait_delivered(node, body["id"])
    await settle(node)
    creds = operator(config)
    async with (
        operator_session(config, creds) as session,
        session.get(f"https://localhost:{node.port}/metrics") as reply,
    ):
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await reply.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    assert families["gateway_documents_accepted"].type == "counter"
    accepted = samples(families, "gateway_documents_accepted", "_total")
    assert accepted[(("kind", "edoc"), ("network", "government"), ("priority", "0"))] == 1
    assert accepted[(("kind", "edoc"), ("network", "government"), ("priority", "3"))] == 2
    delivered = samples(families, "gateway_documents_delivered", "_total")
    assert delivered[(("network", "party"), ("priority", "0"))] == 1
    assert delivered[(("network", "party"), ("priority", "3"))] == 1
    assert delivered[(("network", "front"), ("priority", "3"))] == 1

    latency = families["gateway_delivery_latency_seconds"]
    assert latency.type == "histogram"
    counts = samples(families, "gateway_delivery_latency_seconds", "_count")
    assert counts[(("network", "party"), ("priority", "3"))] == 1
    buckets = samples(families, "gateway_delivery_latency_seconds", "_bucket")
    assert buckets[(("le", "+Inf"), ("network", "front"), ("priority", "3"))] == 1
    assert buckets[(("le", "3600.0"), ("network", "front"), ("priority", "3"))] == 1

    assert families["gateway_queue_depth"].type == "gauge"  # nothing waits now: no series, still declared
    expiry = samples(families, "gateway_certificate_expiry_days")
    assert 300 < expiry[(("owner", "ADAPTER.GOVERNMENT"), ("role", "sign"))] < 826
    assert 29 < expiry[(("owner", "OPERATOR.ALICE"), ("role", "tls"))] <= 30
    assert samples(families, "gateway_certificates_expiring_soon")[()] >= 1
    links = samples(families, "gateway_bridge_link_up")
    assert links[(("from", "government"), ("to", "party"))] == 1
    assert links[(("from", "government"), ("to", "front"))] == 1
    assert (("from", "government"), ("to", "party")) in samples(
        families, "gateway_bridge_last_success_timestamp_seconds"
    )
    assert "gateway_audit_unsigned_records" in families


async def test_metrics_are_for_operators_only(node: Node, config: Config, agency):
    async with (
        operator_session(config, None) as anonymous,
        anonymous.get(f"https://localhost:{node.port}/metrics") as reply,
    ):
        assert reply.status == 401
    client = agency(G22)
    async with client.session.get(f"{client.base}/metrics") as reply:
        assert reply.status == 403 and "not an operator" in await reply.text()
    assert client_context(config, G22)  # (the agency's certificate is a valid TLS client certificate)


async def test_json_log_lines_name_the_request_and_document_and_hold_no_secret(
    node: Node, config: Config, agency, tmp_path: Path
):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        client = agency(G22)
        headers = {"X-Request-Id": "req-toi-mat-1", "X-Classification": "toi-mat"}
        async with client.session.post(
            client.base + "/v1/edocs", data=classified_package(config, [A01]), headers=headers
        ) as reply:
            body = await reply.json()
            assert reply.status == 202, body
        async with client.session.post(
            client.base + "/v1/edocs", data=b"<not-xml", headers={"X-Request-Id": "req-bad-2"}
        ) as reply:
            assert reply.status == 400
        await wait_delivered(node, body["id"])
        await settle(node)
        await node.feed.poll()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)

    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert lines and all(line["request_id"] for line in lines)
    events = [line for line in lines if line["logger"] == "gateway.events"]
    mine = [line for line in events if line["document"] == body["id"]]
    stored = await node.store.events(body["id"])
    assert sorted(line["seq"] for line in mine) == sorted(e.seq for e in stored)  # one line per event
    accepted = next(line for line in mine if line["event"] == "accepted")
    assert accepted["request_id"] == "req-toi-mat-1" and accepted["detail"]["classification"] == "toi-mat"
    carried = next(line for line in mine if line["event"] == "delivered")
    assert carried["request_id"].startswith("job-")  # the courier's work has an id of its own
    refused = next(line for line in lines if line["request_id"] == "req-bad-2")
    assert refused["level"] == "INFO" and "malformed_xml" in refused["message"]
    for secret in (SUBJECT, CONTENT, "PRIVATE KEY"):
        assert secret not in text
