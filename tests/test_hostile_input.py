"""Bad input gets one clear error and a stable code, from the parser and from the live API."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from lxml import etree

from gateway.domain.edxml import DS, NS, header_of, validate_package
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import ClientError, ForbiddenXmlConstruct, PackageTooLarge
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, make_package

ATTACKS = Path(__file__).parent / "data" / "attacks"
EXPECTED = {
    "billion_laughs.xml": "forbidden_xml",
    "xxe_local_file.xml": "forbidden_xml",
    "xxe_network.xml": "forbidden_xml",
    "external_dtd.xml": "forbidden_xml",
    "parameter_entity.xml": "forbidden_xml",
    "quadratic_blowup.xml": "forbidden_xml",
    "processing_instruction.xml": "forbidden_xml",
    "deep_nesting.xml": "forbidden_xml",
    "xinclude.xml": "schema_invalid",  # parsed as a plain element (XInclude is never processed), then refused
}


ROOTS = ["edXMLEnvelope", "edXML"]
_ENVELOPE_START = re.compile(rb"<edXML:edXMLEnvelope[^>]*>")


def _attack(name: str, root: str) -> bytes:
    """An attack file as written (rooted at edXMLEnvelope), or wrapped in the SDKs' edXML root."""
    raw = (ATTACKS / name).read_bytes()
    if root == "edXMLEnvelope":
        return raw
    start = _ENVELOPE_START.search(raw)
    assert start is not None, name
    opening = b'<edXML xmlns="' + NS.encode() + b'">'
    if start.group().endswith(b"/>"):
        return raw[: start.start()] + opening + start.group() + b"</edXML>" + raw[start.end() :]
    end = raw.rindex(b"</edXML:edXMLEnvelope>") + len(b"</edXML:edXMLEnvelope>")
    return raw[: start.start()] + opening + raw[start.start() : end] + b"</edXML>" + raw[end:]


def test_every_attack_file_has_an_expectation() -> None:
    assert sorted(p.name for p in ATTACKS.glob("*.xml")) == sorted(EXPECTED)


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_attack_refused_by_parser_and_schema(name: str, root: str) -> None:
    raw = _attack(name, root)
    with pytest.raises(ClientError) as caught:
        validate_package(parse_xml(raw))
    assert caught.value.code == EXPECTED[name]
    assert b"root:" not in caught.value.message.encode()  # no /etc/passwd content leaks into the error


@pytest.mark.parametrize("root", ROOTS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_attack_refused_by_api(node: Node, agency, name: str, root: str) -> None:
    status, body = await agency(G22).send(_attack(name, root))
    assert (status, body["error"]) == (400, EXPECTED[name])


def test_size_bound_checked_before_parsing() -> None:
    with pytest.raises(PackageTooLarge):
        parse_xml(b"<a>" + b"x" * 2000 + b"</a>", max_bytes=1000)


def test_nesting_bound() -> None:
    with pytest.raises(ForbiddenXmlConstruct):
        parse_xml(b"<a>" * 30 + b"</a>" * 30, max_depth=20)
    parse_xml(b"<a>" * 10 + b"</a>" * 10, max_depth=20)


async def test_malformed_xml_is_400(node: Node, agency) -> None:
    status, body = await agency(G22).send(b"<edXML:edXMLEnvelope xmlns:edXML='x'><unclosed>")
    assert (status, body["error"]) == (400, "malformed_xml")
    status, body = await agency(G22).send(b"")
    assert (status, body["error"]) == (400, "malformed_xml")


@pytest.mark.parametrize("shape", ROOTS)
async def test_schema_invalid_is_400(node: Node, config: Config, agency, shape: str) -> None:
    root = parse_xml(make_package(config, G22, [A01], root=shape))
    doc_id = root.find(".//{http://www.mic.gov.vn/TBT/QCVN_102_2016}DocumentId")
    assert doc_id is not None
    parent = doc_id.getparent()
    assert parent is not None
    parent.remove(doc_id)
    status, body = await agency(G22).send(etree.tostring(root))
    assert (status, body["error"]) == (400, "schema_invalid")
    assert "DocumentId" in body["message"] or "Subject" in body["message"] or "Code" in body["message"]


@pytest.mark.parametrize("shape", ROOTS)
async def test_tampered_package_is_refused_at_intake(node: Node, config: Config, agency, shape: str) -> None:
    raw = make_package(config, G22, [A01], subject="Bản gốc", root=shape)
    tampered = raw.replace("Bản gốc".encode(), "Bản giả".encode())
    assert tampered != raw
    status, body = await agency(G22).send(tampered)
    assert (status, body["error"]) == (400, "signature_invalid")


@pytest.mark.parametrize("shape", ROOTS)
async def test_added_recipient_breaks_the_signature(node: Node, config: Config, agency, shape: str) -> None:
    raw = make_package(config, G22, [A01], root=shape)
    tampered = raw.replace(
        b"<edXML:DocumentId>",
        b"<edXML:To><edXML:OrganId>000.00.00.I01</edXML:OrganId></edXML:To><edXML:DocumentId>",
        1,
    )
    status, body = await agency(G22).send(tampered)
    assert (status, body["error"]) == (400, "signature_invalid")


@pytest.mark.parametrize("shape", ROOTS)
async def test_unsigned_package_is_refused(node: Node, config: Config, agency, shape: str) -> None:
    root = parse_xml(make_package(config, G22, [A01], root=shape))
    sig = root.find(f".//{{{DS}}}Signature")
    assert sig is not None
    parent = sig.getparent()
    assert parent is not None
    parent.remove(sig)
    status, body = await agency(G22).send(etree.tostring(root))
    assert (status, body["error"]) == (400, "signature_invalid")
    assert "not signed" in body["message"]


@pytest.mark.parametrize("shape", ROOTS)
async def test_sha1_signature_is_refused(node: Node, config: Config, agency, shape: str) -> None:
    raw = make_package(config, G22, [A01], root=shape)
    weak = raw.replace(
        b"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", b"http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    )
    weak = weak.replace(
        b"http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        b"http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1",
    )
    assert weak != raw
    status, body = await agency(G22).send(weak)
    assert (status, body["error"]) == (400, "weak_algorithm")


@pytest.mark.parametrize("shape", ROOTS)
async def test_two_signatures_are_refused(node: Node, config: Config, agency, shape: str) -> None:
    root = parse_xml(make_package(config, G22, [A01], root=shape))
    header = header_of(root)
    sig = header.find(f"{{{DS}}}Signature")
    assert sig is not None
    header.append(etree.fromstring(etree.tostring(sig)))
    status, body = await agency(G22).send(etree.tostring(root))
    assert status == 400 and body["error"] in ("schema_invalid", "signature_invalid")


async def test_too_large_is_413(config: Config, agency, node: Node) -> None:
    big = io.BytesIO(b"<a>" + b"x" * (node.config.max_package_bytes + 10) + b"</a>")
    status, body = await agency(G22).call("POST", "/v1/edocs", big)
    assert (status, body["error"]) == (413, "too_large")


async def test_unknown_route_and_method_are_json(node: Node, agency) -> None:
    status, body = await agency(G22).call("GET", "/v1/nothing-here")
    assert (status, body["error"]) == (404, "not_found")
    status, body = await agency(G22).call("DELETE", "/v1/inbox")
    assert (status, body["error"]) == (405, "method_not_allowed")
