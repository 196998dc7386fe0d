"""XMLDSig refusals are crypto errors, translated from signxml and lxml where they happen."""

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


def test_a_signature_outside_the_xmldsig_schema_is_invalid_not_an_lxml_error() -> None:
    root = _signed()
    signature = root.find(f"{{{DS}}}Signature")
    assert signature is not None
    signature.insert(0, signature[1])  # SignatureValue before SignedInfo: the policy counts, the XSD orders
    with pytest.raises(SignatureInvalid, match="the signature is malformed") as caught:
        verify_enveloped(root, location="./", check_certificate=lambda cert: cert)
    assert isinstance(caught.value.__cause__, etree.DocumentInvalid)


def test_a_weak_algorithm_is_a_crypto_error_that_knows_no_http() -> None:
    raw = etree.tostring(_signed()).replace(
        b"http://www.w3.org/2001/04/xmlenc#sha256", b"http://www.w3.org/2000/09/xmldsig#sha1"
    )
    with pytest.raises(SignatureAlgorithmRefused, match="use SHA-256") as caught:
        verify_enveloped(etree.fromstring(raw), location="./", check_certificate=lambda cert: cert)
    assert not isinstance(caught.value, ClientError)


def test_signing_input_signxml_refuses_is_a_crypto_error() -> None:
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
