"""Enveloped XML signatures (XMLDSig) under one strict policy: RSA-SHA256 or ECDSA-SHA256, SHA-256 digests.

Elements in, a frozen :class:`Verified` out. The caller passes a ``check_certificate``
callable that decides whether the certificate in KeyInfo may sign here (chain,
role, agency, revocation); this module only does XML and maths.

Wrapping defence: the signature must sit at one pinned place, reference the
whole document (``URI=""``, enveloped), and callers act only on
``Verified.signed`` — the tree the verifier rebuilt from the signed bytes.

Refusals are ``SignatureInvalid`` (``SignatureAlgorithmRefused`` for an algorithm
outside the policy), never an HTTP error: the caller decides what a refusal means
to its own caller (``SignatureRejected.from_crypto`` for a client, or a ``DeliveryError``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from gateway.errors import CryptoError, SignatureAlgorithmRefused, SignatureInvalid

DS = "http://www.w3.org/2000/09/xmldsig#"
_NS = {"ds": DS}
ALLOWED_SIGNATURE_METHODS = frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256})
ALLOWED_DIGESTS = frozenset({DigestAlgorithm.SHA256})

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
T = TypeVar("T")


@dataclass(frozen=True)
class Verified:
    """What a verifier vouches for: the signed tree, its exact bytes, and who signed it."""

    signed: etree._Element
    signed_data: bytes
    certificate: x509.Certificate

    @property
    def signed_digest(self) -> str:
        """SHA-256 (hex) of the canonical signed bytes: equal for equal content, whatever the signature."""
        return hashlib.sha256(self.signed_data).hexdigest()


def sign_enveloped(root: etree._Element, key: SigningKey, chain: list[x509.Certificate]) -> etree._Element:
    """Sign ``root`` as a whole (URI="", enveloped) at its ``ds:Signature Id="placeholder"``.

    Returns the signed root. ``chain`` is the signer's certificate first. Raises
    :class:`CryptoError` when signxml refuses the input (two placeholders, say).
    """
    method = (
        SignatureMethod.ECDSA_SHA256
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else SignatureMethod.RSA_SHA256
    )
    signer = XMLSigner(
        signature_algorithm=method,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    try:
        signed: etree._Element = signer.sign(root, key=key, cert=chain[:1])
    except InvalidInput as exc:
        raise CryptoError(f"cannot sign the document: {exc}") from exc
    return signed


def _policy(location: str) -> SignatureConfiguration:
    return SignatureConfiguration(
        require_x509=True,
        location=location,
        expect_references=1,
        signature_methods=ALLOWED_SIGNATURE_METHODS,
        digest_algorithms=ALLOWED_DIGESTS,
    )


def _signature_at(root: etree._Element, location: str) -> etree._Element:
    found = root.findall(f"{location}ds:Signature", _NS)
    if not found:
        raise SignatureInvalid("the package is not signed (no ds:Signature where one is required)")
    if len(found) > 1:
        raise SignatureInvalid("more than one ds:Signature where exactly one is allowed")
    return found[0]


def _refuse_weak(signature: etree._Element) -> None:
    for node in signature.iterfind(".//ds:SignatureMethod", _NS):
        uri = node.get("Algorithm", "")
        if uri not in {m.value for m in ALLOWED_SIGNATURE_METHODS}:
            raise SignatureAlgorithmRefused(
                f"signature algorithm {uri} is not accepted; use RSA-SHA256 or ECDSA-SHA256"
            )
    for node in signature.iterfind(".//ds:DigestMethod", _NS):
        uri = node.get("Algorithm", "")
        if uri not in {d.value for d in ALLOWED_DIGESTS}:
            raise SignatureAlgorithmRefused(f"digest algorithm {uri} is not accepted; use SHA-256")
    references = signature.findall("ds:SignedInfo/ds:Reference", _NS)
    if len(references) != 1 or references[0].get("URI") != "":
        raise SignatureInvalid(
            'the signature must have exactly one reference, to the whole document (URI="")'
        )


def _certificate_of(signature: etree._Element) -> x509.Certificate:
    certs = signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)
    if not certs:
        raise SignatureInvalid("the signature carries no X.509 certificate in KeyInfo")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((certs[0].text or "").split())))
    except ValueError as exc:
        raise SignatureInvalid("the certificate in KeyInfo cannot be read") from exc


def verify_enveloped(
    root: etree._Element,
    *,
    location: str,
    check_certificate: Callable[[x509.Certificate], T],
) -> tuple[Verified, T]:
    """Verify the one signature at ``location`` (an ElementPath prefix such as ``./`` or
    ``./{ns}edXMLHeader/``) and return what it signed plus ``check_certificate``'s verdict.

    ``check_certificate`` runs before any signature maths and raises to refuse the signer;
    its errors pass through unchanged. Raises :class:`SignatureInvalid` (or
    :class:`SignatureAlgorithmRefused`) saying why the signature itself is refused.
    """
    signature = _signature_at(root, location)
    _refuse_weak(signature)
    certificate = _certificate_of(signature)
    verdict = check_certificate(certificate)
    try:
        result = XMLVerifier().verify(root, x509_cert=certificate, expect_config=_policy(location))
    except InvalidDigest as exc:
        raise SignatureInvalid("the signed content was changed after signing (digest mismatch)") from exc
    except InvalidCertificate as exc:
        raise SignatureInvalid(f"the signing certificate is not usable: {exc}") from exc
    except InvalidSignature as exc:
        raise SignatureInvalid("the signature value does not verify") from exc
    except InvalidInput as exc:
        raise SignatureInvalid(f"the signature is malformed: {exc}") from exc
    except etree.DocumentInvalid as exc:
        # signxml checks ds:Signature against the XMLDSig schema, which edxml.xsd leaves to us (lax).
        raise SignatureInvalid(f"the signature is malformed: {exc}") from exc
    if not isinstance(result, VerifyResult) or result.signed_xml is None:
        raise SignatureInvalid("the signed content is not XML")
    return Verified(result.signed_xml, result.signed_data, certificate), verdict
