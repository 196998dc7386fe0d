"""A signature means exactly one thing: what the policy of ``gateway.crypto.xmldsig`` lets it say.

Each attack of issue 12's corpus is built from a validly signed package by editing its
ds:Signature with lxml. Where the attack only works if the verifier skips what it does not
know, the edited SignedInfo is signed again with the sender's real key, so the signature
maths alone would accept it: only the policy refuses it. Everything goes through the real
API on a real server, and nothing may be stored.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from copy import deepcopy
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree

from gateway.crypto.issuing import generate_key, make_root_ca
from gateway.crypto.pki import KeyType, Role
from gateway.crypto.xmldsig import DS, SignaturePolicy, sign_enveloped, verify_enveloped
from gateway.domain.edxml import signature_location
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import SignatureInvalid
from gateway.infra.files.pki_dir import agency_paths, load_key_pair
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, make_package

NS = {"ds": DS}
XSLT = "http://www.w3.org/TR/1999/REC-xslt-19991116"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"
XPATH_FILTER2 = "http://www.w3.org/2002/06/xmldsig-filter2"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
C14N_METHODS = [
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
    EXC_C14N,
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
]


def _one(root: etree._Element, path: str) -> etree._Element:
    found = root.find(path, NS)
    assert found is not None, path
    return found


def _c14n(node: etree._Element, algorithm: str) -> bytes:
    # A standalone copy, as a verifier canonicalises it (no namespaces leaking from ancestors).
    copy = etree.fromstring(etree.tostring(node))
    return etree.tostring(
        copy, method="c14n", exclusive="exc-c14n" in algorithm, with_comments=algorithm.endswith("Comments")
    )


def _resign(config: Config, root: etree._Element, *, digest_with: str | None = None) -> etree._Element:
    """Sign ``root``'s edited SignedInfo again with the sender's real key.

    ``digest_with``: recompute the DigestValue over the document without its signature,
    canonicalised with this algorithm (otherwise the signer's digest is kept, as a verifier
    that skips unknown transforms would compute it).
    """
    signature = _one(root, ".//ds:Signature")
    if digest_with is not None:
        unsigned = deepcopy(root)
        gone = _one(unsigned, ".//ds:Signature")
        parent = gone.getparent()
        assert parent is not None
        parent.remove(gone)
        digest = hashlib.sha256(_c14n(unsigned, digest_with)).digest()
        _one(signature, "ds:SignedInfo/ds:Reference/ds:DigestValue").text = base64.b64encode(digest).decode()
    signed_info = _one(signature, "ds:SignedInfo")
    method = _one(signed_info, "ds:CanonicalizationMethod").get("Algorithm", EXC_C14N)
    data = _c14n(signed_info, method)
    crt, key_path = agency_paths(config.certs, G22, Role.SIGN)
    _, key, _ = load_key_pair(crt, key_path)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8
        raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        raw = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    _one(signature, "ds:SignatureValue").text = base64.b64encode(raw).decode()
    return root


def _transform(algorithm: str, *children: etree._Element) -> etree._Element:
    node = etree.Element(f"{{{DS}}}Transform", Algorithm=algorithm, nsmap={"ds": DS})
    node.extend(children)
    return node


def add_xslt_transform(config: Config, root: etree._Element) -> str:
    stylesheet = etree.fromstring(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        '<xsl:template match="/"><nothing/></xsl:template></xsl:stylesheet>'
    )
    _one(root, ".//ds:Reference/ds:Transforms").append(_transform(XSLT, stylesheet))
    _resign(config, root)
    return XSLT


def add_xpath_false(config: Config, root: etree._Element) -> str:
    xpath = etree.Element(f"{{{DS}}}XPath", nsmap={"ds": DS})
    xpath.text = "false()"
    _one(root, ".//ds:Reference/ds:Transforms").append(_transform(XPATH, xpath))
    _resign(config, root)
    return XPATH


def add_xpath_filter2_subtracting_header(config: Config, root: etree._Element) -> str:
    xpath = etree.Element(
        f"{{{XPATH_FILTER2}}}XPath",
        Filter="subtract",
        nsmap={"f": XPATH_FILTER2, "edXML": "http://www.mic.gov.vn/TBT/QCVN_102_2016"},
    )
    xpath.text = "//edXML:MessageHeader"
    _one(root, ".//ds:Reference/ds:Transforms").append(_transform(XPATH_FILTER2, xpath))
    _resign(config, root)
    return XPATH_FILTER2


def xslt_as_canonicalization(config: Config, root: etree._Element) -> str:
    _one(root, ".//ds:SignedInfo/ds:CanonicalizationMethod").set("Algorithm", XSLT)
    return XSLT


def empty_signature_value(config: Config, root: etree._Element) -> str:
    _one(root, ".//ds:SignatureValue").text = ""
    return "SignatureValue"


def non_base64_signature_value(config: Config, root: etree._Element) -> str:
    _one(root, ".//ds:SignatureValue").text = "this is ~not~ base64!"
    return "SignatureValue"


def missing_canonicalization(config: Config, root: etree._Element) -> str:
    method = _one(root, ".//ds:SignedInfo/ds:CanonicalizationMethod")
    signed_info = method.getparent()
    assert signed_info is not None
    signed_info.remove(method)
    return "CanonicalizationMethod"


def two_references(config: Config, root: etree._Element) -> str:
    reference = _one(root, ".//ds:SignedInfo/ds:Reference")
    reference.addnext(deepcopy(reference))
    _resign(config, root)
    return "2 ds:Reference"


def reference_to_an_id(config: Config, root: etree._Element) -> str:
    _one(root, ".//ds:SignedInfo/ds:Reference").set("URI", "#x")
    _resign(config, root)
    return "'#x'"


def two_certificates(config: Config, root: etree._Element) -> str:
    certificate = _one(root, ".//ds:KeyInfo/ds:X509Data/ds:X509Certificate")
    certificate.addnext(deepcopy(certificate))
    return "2 ds:X509Certificate"


def key_value_beside_the_certificate(config: Config, root: etree._Element) -> str:
    key_info = _one(root, ".//ds:KeyInfo")
    etree.SubElement(key_info, f"{{{DS}}}KeyValue")
    return "ds:KeyValue"


def base64_transform(config: Config, root: etree._Element) -> str:
    uri = "http://www.w3.org/2000/09/xmldsig#base64"
    _one(root, ".//ds:Reference/ds:Transforms").append(_transform(uri))
    _resign(config, root)
    return uri


def c14n_11_transform(config: Config, root: etree._Element) -> str:
    # Canonical XML 1.1 is a real canonicalisation, but not one of the four the policy allows.
    uri = "http://www.w3.org/2006/12/xml-c14n11"
    _one(root, ".//ds:Reference/ds:Transforms/ds:Transform[2]").set("Algorithm", uri)
    _resign(config, root)
    return uri


def no_enveloped_transform(config: Config, root: etree._Element) -> str:
    transforms = _one(root, ".//ds:Reference/ds:Transforms")
    transforms.remove(_one(transforms, "ds:Transform"))
    _resign(config, root)
    return "enveloped-signature"


def an_object_in_the_signature(config: Config, root: etree._Element) -> str:
    etree.SubElement(_one(root, ".//ds:Signature"), f"{{{DS}}}Object").text = "unsigned words"
    return "ds:Object"


ATTACKS: dict[str, tuple[Callable[[Config, etree._Element], str], str]] = {
    # issue 12, finding 3: transforms outside the allow-list were accepted (202)
    "xslt transform": (add_xslt_transform, "signature_invalid"),
    "xpath transform false()": (add_xpath_false, "signature_invalid"),
    "xpath filter 2.0 subtracting MessageHeader": (add_xpath_filter2_subtracting_header, "signature_invalid"),
    # issue 12, finding 4: malformed signatures gave 500 internal
    "xslt as CanonicalizationMethod": (xslt_as_canonicalization, "signature_invalid"),
    "empty SignatureValue": (empty_signature_value, "signature_invalid"),
    "non-base64 SignatureValue": (non_base64_signature_value, "signature_invalid"),
    "missing CanonicalizationMethod": (missing_canonicalization, "signature_invalid"),
    # the rest of the policy: one reference to the whole document, one certificate, nothing else
    "two references": (two_references, "signature_invalid"),
    "reference URI=#x": (reference_to_an_id, "signature_invalid"),
    "two X509Certificates": (two_certificates, "signature_invalid"),
    "KeyValue beside the certificate": (key_value_beside_the_certificate, "signature_invalid"),
    "base64 transform": (base64_transform, "signature_invalid"),
    "c14n 1.1 transform": (c14n_11_transform, "signature_invalid"),
    "no enveloped-signature transform": (no_enveloped_transform, "signature_invalid"),
    "ds:Object in the signature": (an_object_in_the_signature, "signature_invalid"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_signature_outside_the_policy_is_refused_and_nothing_stored(
    node: Node, config: Config, agency, name: str
) -> None:
    subject = "Tờ trình mật về nhân sự"
    root = parse_xml(make_package(config, G22, [A01], subject=subject))
    edit, code = ATTACKS[name]
    named = edit(config, root)
    status, body = await agency(G22).send(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    assert (status, body["error"]) == (400, code), body
    assert named in body["message"], body["message"]  # says what it found...
    assert subject not in body["message"]  # ...never what the document says
    assert await node.store.events_of_kind("accepted") == []
    status, inbox = await agency(A01).call("GET", "/v1/inbox")
    assert (status, inbox["documents"]) == (200, [])


async def test_resigning_alone_keeps_a_package_valid(node: Node, config: Config, agency) -> None:
    # The control for the attacks above: the same re-signing, with no edit, is accepted.
    root = _resign(config, parse_xml(make_package(config, G22, [A01])))
    status, body = await agency(G22).send(etree.tostring(root))
    assert status == 202, body


async def test_every_allowed_canonicalisation_is_accepted(node: Node, config: Config, agency) -> None:
    for number, method in enumerate(C14N_METHODS):
        root = parse_xml(make_package(config, G22, [A01], document_id=f"{G22},2026/11/22,{number}/C14N"))
        _one(root, ".//ds:SignedInfo/ds:CanonicalizationMethod").set("Algorithm", method)
        _one(root, ".//ds:Reference/ds:Transforms/ds:Transform[2]").set("Algorithm", method)
        _resign(config, root, digest_with=method)
        status, body = await agency(G22).send(etree.tostring(root))
        assert status == 202, (method, body)


async def test_the_reference_may_leave_canonicalisation_to_the_default(
    node: Node, config: Config, agency
) -> None:
    # With no c14n transform, XMLDSig says the node-set becomes octets by Canonical XML 1.0.
    root = parse_xml(make_package(config, G22, [A01]))
    transforms = _one(root, ".//ds:Reference/ds:Transforms")
    transforms.remove(_one(transforms, "ds:Transform[2]"))
    _resign(config, root, digest_with=C14N_METHODS[0])
    status, body = await agency(G22).send(etree.tostring(root))
    assert status == 202, body


async def test_a_certificate_that_is_no_certificate_is_400(node: Node, config: Config, agency) -> None:
    root = parse_xml(make_package(config, G22, [A01]))
    _one(root, ".//ds:X509Certificate").text = base64.b64encode(b"not a certificate").decode()
    status, body = await agency(G22).send(etree.tostring(root))
    assert (status, body["error"]) == (400, "signature_invalid")
    assert "cannot be read" in body["message"]


async def test_a_valid_signature_by_a_stranger_is_403(node: Node, config: Config, agency) -> None:
    # Well formed and mathematically valid, by a key no CA of the gateway vouches for.
    root = parse_xml(make_package(config, G22, [A01]))
    signature = _one(root, ".//ds:Signature")
    header = signature.getparent()
    assert header is not None
    header.remove(signature)
    etree.SubElement(header, f"{{{DS}}}Signature", {"Id": "placeholder"}, nsmap={"ds": DS})
    key = generate_key(KeyType.P256)
    stranger = make_root_ca(key, "000.00.00.G22", datetime.now(UTC), 1)
    status, body = await agency(G22).send(etree.tostring(sign_enveloped(root, key, [stranger])))
    assert (status, body["error"]) == (403, "signer_not_trusted")


def test_a_policy_can_only_narrow_and_names_what_it_refused(config: Config) -> None:
    root = parse_xml(make_package(config, G22, [A01]))
    only_inclusive = SignaturePolicy(canonicalizations=frozenset(C14N_METHODS[:2]))
    with pytest.raises(SignatureInvalid, match=r"CanonicalizationMethod .*xml-exc-c14n"):
        verify_enveloped(
            root,
            location=signature_location(root),
            check_certificate=lambda cert: cert,
            policy=only_inclusive,
        )
    with pytest.raises(ValueError, match="outside"):
        SignaturePolicy(transforms=frozenset({ENVELOPED, XSLT}))
