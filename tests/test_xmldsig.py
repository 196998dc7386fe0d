"""XMLDSig refusals are crypto errors, raised by the policy or translated from libxmlsec1."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from gateway.crypto.issuing import generate_key, make_root_ca
from gateway.crypto.pki import KeyType
from gateway.crypto.xmldsig import DS, sign_enveloped, verify_enveloped
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import ClientError, CryptoError, SignatureAlgorithmRefused, SignatureInvalid
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, make_package


def _signed(placeholders: int = 1) -> etree._Element:
    key = generate_key(KeyType.P256)
    cert = make_root_ca(key, "Signer", datetime.now(UTC), 1)
    slots = f'<ds:Signature Id="placeholder" xmlns:ds="{DS}"/>' * placeholders
    return sign_enveloped(etree.fromstring(f"<doc><body>x</body>{slots}</doc>"), key, [cert])


def test_a_signature_outside_the_xmldsig_order_is_refused_by_the_policy_before_any_library() -> None:
    root = _signed()
    signature = root.find(f"{{{DS}}}Signature")
    assert signature is not None
    signature.insert(0, signature[1])  # SignatureValue before SignedInfo: the XMLDSig schema orders them
    with pytest.raises(SignatureInvalid, match=r"the signature is malformed.*order") as caught:
        verify_enveloped(root, location="./", check_certificate=lambda cert: cert)
    assert caught.value.__cause__ is None  # the policy's own refusal: libxmlsec1 never saw it


def test_a_weak_algorithm_is_a_crypto_error_that_knows_no_http() -> None:
    raw = etree.tostring(_signed()).replace(
        b"http://www.w3.org/2001/04/xmlenc#sha256", b"http://www.w3.org/2000/09/xmldsig#sha1"
    )
    with pytest.raises(SignatureAlgorithmRefused, match="use SHA-256") as caught:
        verify_enveloped(etree.fromstring(raw), location="./", check_certificate=lambda cert: cert)
    assert not isinstance(caught.value, ClientError)


def test_signing_input_with_two_placeholders_is_a_crypto_error() -> None:
    with pytest.raises(CryptoError, match="more than one placeholder"):
        _signed(placeholders=2)


async def test_a_schema_invalid_signature_is_400_at_intake(node: Node, config: Config, agency) -> None:
    root = parse_xml(make_package(config, G22, [A01]))
    signature = root.find(f".//{{{DS}}}Signature")
    assert signature is not None
    signature.insert(0, signature[1])  # SignatureValue before SignedInfo: the policy counts, the XSD orders
    status, body = await agency(G22).send(etree.tostring(root))
    assert (status, body["error"]) == (400, "signature_invalid")
    assert "malformed" in body["message"]


# --- signxml as an independent implementation, both ways ----------------------------------------


def test_a_signature_made_by_signxml_verifies_here_and_ours_verifies_in_signxml() -> None:
    from signxml.algorithms import CanonicalizationMethod, SignatureMethod
    from signxml.signer import XMLSigner
    from signxml.verifier import VerifyResult, XMLVerifier

    key = generate_key(KeyType.P256)
    cert = make_root_ca(key, "Signer", datetime.now(UTC), 1)
    theirs = XMLSigner(
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(etree.fromstring("<doc><body>x</body></doc>"), key=key, cert=[cert])
    verified, _ = verify_enveloped(
        parse_xml(etree.tostring(theirs)), location="./", check_certificate=lambda c: c
    )
    assert verified.signed.findtext("body") == "x"

    ours = etree.tostring(_signed())
    result = XMLVerifier().verify(ours, x509_cert=_signed_cert(ours))
    assert isinstance(result, VerifyResult) and result.signed_xml is not None
    tampered = ours.replace(b"<body>x</body>", b"<body>y</body>")
    with pytest.raises(Exception, match=r"[Dd]igest"):
        XMLVerifier().verify(tampered, x509_cert=_signed_cert(tampered))
    with pytest.raises(SignatureInvalid, match="digest mismatch"):
        verify_enveloped(parse_xml(tampered), location="./", check_certificate=lambda c: c)


def _signed_cert(raw: bytes) -> str:
    found = etree.fromstring(raw).findtext(f".//{{{DS}}}X509Certificate")
    assert found
    return "-----BEGIN CERTIFICATE-----\n" + found + "\n-----END CERTIFICATE-----\n"


def test_comments_are_not_read_as_signed_text() -> None:
    """A URI="" reference does not digest comments: what is read after verifying holds none, so a
    comment cannot split or hide text the signature covers."""
    key = generate_key(KeyType.P256)
    cert = make_root_ca(key, "Signer", datetime.now(UTC), 1)
    root = etree.fromstring(
        f'<doc><body>Hello<!-- x -->World</body><ds:Signature Id="placeholder" xmlns:ds="{DS}"/></doc>'
    )
    signed = etree.tostring(sign_enveloped(root, key, [cert]))
    verified, _ = verify_enveloped(parse_xml(signed), location="./", check_certificate=lambda c: c)
    assert verified.signed.findtext("body") == "HelloWorld"


def test_a_signed_tree_verifies_as_it_is_without_being_parsed_again() -> None:
    """What ``sign_enveloped`` returns is an ordinary lxml tree: its signature is found and verified
    in place (nodes built by libxmlsec1's template functions were invisible to lxml's find)."""
    for _ in range(3):  # the key is cached after the first signature: each later one verifies too
        verified, _ = verify_enveloped(_signed(), location="./", check_certificate=lambda c: c)
        assert verified.signed.findtext("body") == "x"
