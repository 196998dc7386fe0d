"""The OpenAPI contract (gateway/http/openapi.json, issue 14 item 1): a valid OpenAPI 3.1 document,
its error codes the very set of gateway/errors.py, every route of the API in it, and each route,
called once on a real node, answering as it says (tests/api_contract.py checks every answer)."""

from __future__ import annotations

import ast
import base64
import copy
import dataclasses
import inspect
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from gateway import errors
from gateway.adapters.network import NetworkAdapter
from gateway.agency_side.packages import sign_package
from gateway.crypto.pki import Role
from gateway.crypto.xmldsig import verify_enveloped
from gateway.domain import transfer as tr
from gateway.domain.clock import SystemClock
from gateway.domain.edxml import Organ, build_status, signature_location
from gateway.domain.vocabulary import Classification, Network, Priority, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.http import api as api_module
from gateway.http import edge as edge_module
from gateway.http.api import server_tls_context
from gateway.http.openapi import contract, contract_bytes
from gateway.infra.files.keys import load_seal_key
from gateway.infra.files.pki_dir import adapter_paths, server_paths
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests import api_contract
from tests.api_contract import ContractViolation, check, contract_session
from tests.conftest import A01, G22, H41, I01, AgencyClient, make_package, trust_for, wait_delivered

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Codes the HTTP layer answers itself, with no error class: a route that exists but not with this
# method, and a fault of the gateway. Any other literal code in api.py or edge.py fails below.
HTTP_LAYER = {"method_not_allowed": 405, "internal": 500}


def tree_codes() -> dict[str, int]:
    """code -> status of every error class in gateway/errors.py that has a stable code."""
    found: dict[str, int] = {}
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if cls.__module__ == errors.__name__ and isinstance(vars(cls).get("code"), str):
            inherited = {k: v for base in reversed(cls.__mro__) for k, v in vars(base).items()}
            found[inherited["code"]] = inherited["status"]
    return found


def literal_codes(*modules: Any) -> set[str]:
    """The codes written as literals where the HTTP layer builds error bodies itself: the code
    argument of ``_error``/``error_body`` and the values of a status -> code table."""
    position = {"_error": 1, "error_body": 0}  # _error(status, code, ...), error_body(code, ...)
    codes: set[str] = set()
    for module in modules:
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in position:
                written = [node.args[position[node.func.id]]]
            elif isinstance(node, ast.Dict) and all(
                isinstance(k, ast.Constant) and isinstance(k.value, int) for k in node.keys
            ):
                written = list(node.values)
            else:
                continue
            codes |= {v.value for v in written if isinstance(v, ast.Constant) and isinstance(v.value, str)}
    return codes


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def test_the_contract_is_a_valid_openapi_3_1_document() -> None:
    doc = contract()
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)
    # The validator can fail: a response without its description, a dangling $ref.
    broken = copy.deepcopy(doc)
    del broken["paths"]["/v1/inbox"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken, cls=OpenAPIV31SpecValidator)
    broken = copy.deepcopy(doc)
    broken["paths"]["/v1/inbox"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchSchema"
    }
    with pytest.raises(Exception, match="NoSuchSchema"):
        validate(broken, cls=OpenAPIV31SpecValidator)


def test_the_error_code_enum_is_every_code_of_the_error_tree() -> None:
    """A new code in gateway/errors.py (or written in the HTTP layer) without a contract entry fails here."""
    codes = tree_codes()
    assert {"not_found", "unknown_document", "checkers_busy", "server_busy"} <= set(codes)
    written = literal_codes(api_module, edge_module)
    assert {"method_not_allowed", "internal", "not_found", "bad_request"} <= written  # the scan sees them
    unexplained = written - set(codes) - set(HTTP_LAYER)
    assert unexplained == set(), "a code written in the HTTP layer must be an error class's or in HTTP_LAYER"
    enum = contract()["components"]["schemas"]["ErrorCode"]["enum"]
    assert len(enum) == len(set(enum))
    assert set(enum) == set(codes) | set(HTTP_LAYER)


def test_each_error_response_lists_exactly_the_codes_of_its_status() -> None:
    by_status: dict[int, set[str]] = {}
    for code, status in {**tree_codes(), **HTTP_LAYER}.items():
        by_status.setdefault(status, set()).add(code)
    responses = contract()["components"]["responses"]
    listed = {
        int(name[1:]): set(r["content"]["application/json"]["schema"]["properties"]["error"]["enum"])
        for name, r in responses.items()
        if re.fullmatch(r"E\d{3}", name)
    }
    assert listed == by_status
    for status in (429, 503):  # both answers of each say when to come back
        assert "Retry-After" in responses[f"E{status}"]["headers"]


async def test_every_route_of_the_api_is_in_the_contract(node: Node) -> None:
    app = node.app()
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        # The operators' console and /metrics are HTML and Prometheus text for operators, not the API.
        and not route.resource.canonical.startswith(("/console", "/metrics"))
    }
    assert ("GET", "/v1/openapi.json") in served
    assert served == operations(contract())


async def test_the_contract_is_served_to_agencies_as_it_is_kept(node: Node, agency) -> None:
    status, body = await agency(H41).call("GET", "/v1/openapi.json")
    assert status == 200 and body == json.loads(contract_bytes())
    status, body = await agency(None).call("GET", "/v1/openapi.json")
    assert (status, body["error"]) == (401, "unauthenticated")


@pytest.fixture
async def party_node(config: Config) -> AsyncIterator[Node]:
    """A node of the party network only, whose government peer is a test acting as that node."""
    federated = dataclasses.replace(
        config,
        network=Network.PARTY,
        peers={Network.GOVERNMENT: "https://127.0.0.1:9", Network.FRONT: "https://127.0.0.1:9"},
        database="sqlite:///party.db",
    )
    n = Node(federated)
    await n.start(port=0)
    try:
        yield n
    finally:
        await n.stop()


def government_transfer(config: Config, package: bytes, transfer_id: str) -> bytes:
    """What the government node hands the party node for a document from G22 to A01: the
    package sealed by the government network's adapter, with the real key of the dev PKI."""
    root = parse_xml(package)
    signed, _ = verify_enveloped(root, location=signature_location(root), check_certificate=lambda c: c)
    routing = tr.Routing(
        transfer_id=transfer_id,
        kind="edoc",
        sender=G22,
        source=Network.GOVERNMENT,
        target=Network.PARTY,
        recipients=(tr.RecipientRef(A01, A01),),
        classification=Classification.NONE,
        priority=Priority.THUONG,
        package_digest=base64.b64encode(bytes.fromhex(signed.signed_digest)).decode("ascii"),
        document_id=transfer_id,
    )
    adapter = NetworkAdapter(
        load_seal_key(config.certs, Network.GOVERNMENT), trust_for(config), SystemClock()
    )
    sealed = adapter.seal(routing, tr.PackageRef.of(package, encrypted=False))
    return b"".join(tr.frame(sealed, package)[1])


def adapter_client(config: Config, network: Network, port: int) -> AgencyClient:
    ctx = ssl.create_default_context(cafile=str(config.certs / "trust.pem"))
    crt, key = adapter_paths(config.certs, network, Role.TLS)
    ctx.load_cert_chain(str(crt), str(key))
    return AgencyClient(
        f"ADAPTER.{network.value.upper()}", contract_session(ctx), f"https://localhost:{port}"
    )


def _templated(found: re.Match[str]) -> str:
    return "/v1/edocs/{id}" + ("/attachments/{cid}" if found.group(1) else "")


def called(since: int) -> set[tuple[str, str, int]]:
    """The (operation, status) pairs checked against the contract since ``since``, ids as {id}."""
    return {
        (method, re.sub(r"^/v1/edocs/[^/]+(/attachments/[^/]+)?", _templated, path), status)
        for method, path, status in api_contract.CHECKED[since:]
    }


async def test_each_route_once_answers_as_the_contract_says(
    node: Node, config: Config, agency: Callable[[str | None], AgencyClient], party_node: Node
) -> None:
    since = len(api_contract.CHECKED)
    g22, a01, i01, nobody = agency(G22), agency(A01), agency(I01), agency(None)

    assert (await g22.call("GET", "/healthz"))[0] == 200
    assert (await nobody.call("GET", "/healthz"))[0] == 200
    assert (await g22.call("GET", "/v1/openapi.json"))[0] == 200
    assert (await g22.call("GET", "/v1/agencies?network=party&limit=2"))[0] == 200
    assert (await g22.call("GET", "/v1/agencies?limit=0"))[0] == 400
    assert (await nobody.call("GET", "/v1/inbox"))[0] == 401

    package = make_package(config, G22, [A01, "000.00.00.G16"], subject="Về việc thử hợp đồng API")
    status, accepted = await g22.send(package)
    assert status == 202, accepted
    doc_id = accepted["id"]
    async with g22.session.post(
        g22.base + "/v1/edocs", data=package, headers=[("X-Classification", "none")] * 2
    ) as r:
        assert (r.status, (await r.json())["error"]) == (400, "duplicate_header")
    same_id = make_package(config, G22, [A01], document_id=package_document_id(package), content="khác")
    assert (await g22.send(same_id))[0] == 409
    assert (await g22.send(make_package(config, G22, ["000.00.00.G99"])))[0] == 422
    await wait_delivered(node, doc_id)

    assert (await a01.call("GET", "/v1/inbox"))[0] == 200
    assert (await a01.call("GET", f"/v1/edocs/{doc_id}"))[0] == 200
    assert (await g22.call("GET", f"/v1/edocs/{doc_id}"))[0] == 403  # the sender is no recipient
    assert (await i01.call("GET", f"/v1/edocs/{doc_id}"))[0] == 404
    status_pkg = sign_package(
        config.certs,
        A01,
        build_status(
            sender=Organ(A01), about_organ=G22, about_document_id=package_document_id(package),
            code=StatusCode.ACCEPTED, now=datetime.now(UTC), description="Đã vào sổ",
        ),
    )  # fmt: skip
    status, body = await a01.call("POST", f"/v1/edocs/{doc_id}/status", status_pkg)
    assert status == 202, body
    assert (await a01.call("POST", f"/v1/edocs/{doc_id}/status", b"<edXML/>"))[0] == 400
    failure = json.dumps({"stage": "decrypt", "reason": "thử"}).encode()
    assert (await a01.call("POST", f"/v1/edocs/{doc_id}/failures", failure))[0] == 202
    assert (await a01.call("POST", f"/v1/edocs/{doc_id}/failures", b"[]"))[0] == 400
    assert (await g22.call("GET", f"/v1/edocs/{doc_id}/receipts"))[0] == 200
    assert (await i01.call("GET", f"/v1/edocs/{doc_id}/receipts"))[0] == 404
    assert (await g22.call("GET", f"/v1/edocs/{doc_id}/trace"))[0] == 200
    assert (await a01.call("GET", f"/v1/edocs/{doc_id}/attachments/cid:1"))[0] == 404  # it has none
    assert (await g22.call("DELETE", "/v1/inbox"))[0] == 405  # no such operation: still an Error body

    endpoint = "/v1/notifications/endpoint"
    assert (await a01.call("GET", endpoint))[0] == 404
    assert (await a01.call("PUT", endpoint, json.dumps({"url": "http://a01.example/x"}).encode()))[0] == 400
    assert (await a01.call("PUT", endpoint, json.dumps({"url": "https://a01.example/x"}).encode()))[0] == 200
    assert (await a01.call("GET", endpoint))[0] == 200
    assert (await a01.call("DELETE", endpoint))[0] == 204

    # The peer endpoint: on a node that serves every network, no transfers; on a party node, one
    # from the government adapter is taken over (201), and the same again is no second copy (200).
    assert (await g22.call("POST", "/v1/transfers", b"<x/>"))[0] == 403
    sealed = government_transfer(
        config, make_package(config, G22, [A01], subject="Qua cầu nối"), "t-openapi-1"
    )
    peer = adapter_client(config, Network.GOVERNMENT, party_node.port)
    try:
        assert (await peer.call("POST", "/v1/transfers", sealed))[0] == 201
        assert (await peer.call("POST", "/v1/transfers", sealed))[0] == 200
        assert (await peer.call("POST", "/v1/transfers", sealed.replace(b"t-openapi-1", b"t-openapi-2")))[
            0
        ] == 403
    finally:
        await peer.session.close()

    seen = called(since)
    for method, path in operations(contract()):
        assert any((m, p) == (method, path) for m, p, _ in seen), f"{method} {path} was not checked"
    assert {s for *_, s in seen} >= {200, 201, 202, 400, 401, 403, 404, 409, 422}


def package_document_id(package: bytes) -> str:
    match = re.search(rb"<(?:\w+:)?DocumentId>([^<]+)<", package)
    assert match
    return match.group(1).decode()


# --- the check itself can fail --------------------------------------------------------------------


def headers(**extra: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json; charset=utf-8", **extra}))


def error_body(code: str) -> bytes:
    return json.dumps({"error": code, "message": "m", "request_id": "r1"}).encode()


GOOD_HEALTH = json.dumps({"status": "ok", "pending_routes": 0}).encode()


@pytest.mark.parametrize(
    ("path", "status", "head", "body", "why"),
    [
        ("/healthz", 200, {"X-Request-Id": "r1"}, b'{"status": "ok"}', "pending_routes"),
        ("/healthz", 200, {}, GOOD_HEALTH, "X-Request-Id"),
        ("/healthz", 201, {"X-Request-Id": "r1"}, GOOD_HEALTH, "201"),
        ("/v1/inbox", 404, {"X-Request-Id": "r1"}, error_body("no_such_code"), "no_such_code"),
        ("/v1/inbox", 404, {"X-Request-Id": "r1"}, error_body("too_large"), "too_large"),  # 413's code
        ("/v1/inbox", 429, {"X-Request-Id": "r1"}, error_body("rate_limited"), "Retry-After"),
        ("/v1/no-such-route", 404, {"X-Request-Id": "r1"}, b'{"error": "not_found"}', "message"),
    ],
)  # fmt: skip
def test_an_answer_outside_the_contract_is_a_failure(
    path: str, status: int, head: dict[str, str], body: bytes, why: str
) -> None:
    with pytest.raises(ContractViolation, match=why):
        check("GET", f"https://localhost:8443{path}", status, headers(**head), body)


def test_answers_inside_the_contract_pass_and_others_are_not_judged() -> None:
    assert check("GET", "https://localhost:8443/healthz", 200, headers(**{"X-Request-Id": "r1"}), GOOD_HEALTH)
    assert not check("GET", "https://localhost:8443/metrics", 200, headers(), b"# metrics")


async def test_a_drifting_server_fails_the_test_that_reads_its_answer(home: Path) -> None:
    """End to end through the hook: a server on loopback TLS whose inbox lost a field."""

    async def inbox(request: web.Request) -> web.Response:
        entry = {"id": "x", "kind": "edoc"}  # most of an inbox entry missing
        return web.json_response({"agency": A01, "documents": [entry]}, headers={"X-Request-Id": "r1"})

    app = web.Application()
    app.router.add_get("/v1/inbox", inbox)
    runner = web.AppRunner(app)
    await runner.setup()
    crt, key = server_paths(home / "certs_dev")
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=server_tls_context(str(crt), str(key), str(home / "certs_dev" / "trust.pem")),
    )
    await site.start()
    port = runner.addresses[0][1]
    ctx = ssl.create_default_context(cafile=str(home / "certs_dev" / "trust.pem"))
    try:
        async with contract_session(ctx) as session, session.get(f"https://localhost:{port}/v1/inbox") as r:
            assert r.status == 200
            with pytest.raises(ContractViolation, match="GET /v1/inbox answered 200"):
                await r.json()
    finally:
        await runner.cleanup()
