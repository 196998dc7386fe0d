"""The HTTP edge on a real node (issue 12, items 5 and 7): one value for each header the gateway acts
on, the gateway's JSON error body for malformed HTTP without any of the request echoed back, and a
client that goes away logged at INFO and counted in /metrics, never as an error."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import ConfigError
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, client_context, make_package, set_setting
from tests.oversight_helpers import operator, operator_session
from tests.test_slow_clients import answer, connect

MARK = b"ECHO"  # what the malformed requests carry; none of it may come back


async def send_with_headers(
    agency, code: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, Any]:
    client = agency(code)
    async with client.session.post(client.base + "/v1/edocs", data=body, headers=headers) as reply:
        return reply.status, await reply.json()


async def test_two_x_classification_headers_are_refused_never_guessed(
    node: Node, config: Config, agency
) -> None:
    package = make_package(config, G22, [A01], subject="Hai lần tiêu đề mật")
    for values in (["toi-mat", "none"], ["none", "none"], ["none", "toi-mat"]):
        status, body = await send_with_headers(
            agency, G22, [("X-Classification", v) for v in values], package
        )
        assert (status, body["error"]) == (400, "duplicate_header"), values
        assert "X-Classification" in body["message"]
    status, body = await agency(A01).call("GET", "/v1/inbox")
    assert status == 200 and body["documents"] == []  # nothing was stored
    status, body = await send_with_headers(agency, G22, [("X-Classification", "none")], package)
    assert status == 202  # the same package, declared once, is accepted


async def test_a_query_parameter_given_twice_is_refused(node: Node, agency) -> None:
    for path in (
        "/v1/inbox?limit=1&limit=5000",
        "/v1/inbox?all=0&all=1",
        "/v1/agencies?network=party&network=front",
    ):
        status, body = await agency(A01).call("GET", path)
        assert (status, body["error"]) == (400, "bad_request"), path
    status, _ = await agency(A01).call("GET", "/v1/inbox?limit=5")
    assert status == 200


MALFORMED = {
    "request line too long": b"GET /" + MARK * 2500 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "header too long": b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Long: " + MARK * 2500 + b"\r\n\r\n",
    "bad method": b"G\x01T /" + MARK + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "not HTTP at all": MARK * 40 + b"\r\n\r\n",
    "header without a colon": b"GET / HTTP/1.1\r\nHost: localhost\r\n" + MARK * 10 + b"\r\n\r\n",
    "two different Content-Length": b"POST /v1/edocs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n"
    b"Content-Length: 8\r\n\r\n" + MARK * 2,
    "bad chunk size": b"POST /v1/edocs HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    + MARK
    + b"\r\n"
    + MARK
    + b"\r\n0\r\n\r\n",
}


async def test_malformed_http_gets_the_json_error_body_without_an_echo(
    node: Node, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ctx = client_context(config, G22)
    for case, request in MALFORMED.items():
        raw = await connect(node.port, ctx)
        await raw.send(request)
        _, received = await raw.until_closed(15)
        raw.close()
        assert MARK not in received and MARK.lower() not in received, case
        assert len(received) < 1024, case  # aiohttp's own page echoes up to about 10 KB
        status, headers, error = answer(received)
        assert (status, error["error"]) == (400, "bad_request"), case
        assert headers["content-type"].startswith("application/json") and headers["x-request-id"]
        assert error["request_id"] == headers["x-request-id"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "ECHO" not in logged and "ECHO".lower() not in logged
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    families = await scrape(node, config)
    assert families["gateway_malformed_requests"].samples[0].value == len(MALFORMED)


async def test_a_client_that_goes_away_is_an_info_line_and_a_counter(
    node: Node, config: Config, agency, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ctx = client_context(config, G22)
    for _ in range(3):  # each goes away in the middle of its package
        raw = await connect(node.port, ctx)
        await raw.send(b"POST /v1/edocs HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50000\r\n\r\n<edXML")
        await asyncio.sleep(0.1)  # the handler is waiting for the rest
        raw.writer.transport.abort()  # a reset, as a client that crashed or lost its network
    for _ in range(200):
        if node.metrics.edge.disconnects == 3:
            break
        await asyncio.sleep(0.025)
    families = await scrape(node, config)
    assert families["gateway_client_disconnects"].type == "counter"
    assert families["gateway_client_disconnects"].samples[0].value == 3
    gone = [r for r in caplog.records if "closed before the answer" in r.getMessage()]
    assert len(gone) == 3 and {r.levelno for r in gone} == {logging.INFO}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    status, _ = await agency(A01).call("GET", "/v1/inbox")
    assert status == 200


async def scrape(node: Node, config: Config) -> dict[str, Metric]:
    async with (
        operator_session(config, operator(config)) as session,
        session.get(f"https://localhost:{node.port}/metrics") as reply,
    ):
        assert reply.status == 200
        return {f.name: f for f in text_string_to_metric_families(await reply.text())}


@pytest.mark.parametrize("setting", ["header_timeout", "body_timeout", "max_connections_per_client"])
def test_edge_settings_must_be_positive(home: Path, setting: str) -> None:
    set_setting(home, setting, "0")
    with pytest.raises(ConfigError, match=setting):
        load_config(home)
