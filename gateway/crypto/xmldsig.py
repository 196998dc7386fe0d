"""Enveloped XML signatures (XMLDSig) under one strict policy: RSA-SHA256 or ECDSA-SHA256, SHA-256 digests.

Elements in, a frozen :class:`Verified` out. The caller passes a ``check_certificate``
callable that decides whether the certificate in KeyInfo may sign here (chain,
role, agency, revocation); this module only does XML and maths.

Wrapping defence: the signature must sit at one pinned place, reference the
whole document (``URI=""``, enveloped), and callers act only on
``Verified.signed`` — the tree the verifier rebuilt from the signed bytes.

A signature means exactly one thing: before any maths, :func:`check_policy` holds it to a
:class:`SignaturePolicy` — an allow-list of canonicalisations, transforms and algorithms, and
one fixed shape — so no XSLT, XPath or other transform the gateway does not apply can change
what was signed, and no malformed value reaches signxml.

Refusals are ``SignatureInvalid`` (``SignatureAlgorithmRefused`` for an algorithm
outside the policy), never an HTTP error: the caller decides what a refusal means
to its own caller (``SignatureRejected.from_crypto`` for a client, or a ``DeliveryError``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

import cryptography.exceptions
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
    digest_algorithm_implementations,
)
from signxml.exceptions import (
    InvalidCertificate,
    InvalidDigest,
    InvalidInput,
    InvalidSignature,
    SignXMLException,
)
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from gateway.errors import CryptoError, SignatureAlgorithmRefused, SignatureInvalid

DS = "http://www.w3.org/2000/09/xmldsig#"
_NS = {"ds": DS}
ALLOWED_SIGNATURE_METHODS = frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256})
ALLOWED_DIGESTS = frozenset({DigestAlgorithm.SHA256})
ENVELOPED = SignatureConstructionMethod.enveloped.value
CANONICALIZATIONS = frozenset(
    m.value
    for m in (
        CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0_WITH_COMMENTS,
        CanonicalizationMethod.CANONICAL_XML_1_0,
        CanonicalizationMethod.CANONICAL_XML_1_0_WITH_COMMENTS,
    )
)

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
T = TypeVar("T")


@dataclass(frozen=True)
class SignaturePolicy:
    """What a ``ds:Signature`` may say, held against it before any signature maths.

    The defaults are the gateway's policy. A caller may narrow a set, never widen it past what
    this module applies itself (a ``ValueError`` at construction): a signature whose meaning
    depends on an algorithm the gateway did not apply must never verify.

    The shape is not a setting: one ``SignedInfo`` with one ``CanonicalizationMethod``, one
    ``SignatureMethod`` and one ``Reference`` to the whole document (``URI=""``) whose
    transforms are enveloped-signature and at most one canonicalisation; base64 values; one
    ``KeyInfo/X509Data/X509Certificate`` and nothing beside it; no ``Object``.
    """

    canonicalizations: frozenset[str] = CANONICALIZATIONS
    transforms: frozenset[str] = CANONICALIZATIONS | {ENVELOPED}
    signature_methods: frozenset[SignatureMethod] = ALLOWED_SIGNATURE_METHODS
    digest_algorithms: frozenset[DigestAlgorithm] = ALLOWED_DIGESTS

    def __post_init__(self) -> None:
        for name, chosen, applied in (
            ("canonicalizations", self.canonicalizations, CANONICALIZATIONS),
            ("transforms", self.transforms, CANONICALIZATIONS | {ENVELOPED}),
            ("signature_methods", self.signature_methods, ALLOWED_SIGNATURE_METHODS),
            ("digest_algorithms", self.digest_algorithms, ALLOWED_DIGESTS),
        ):
            if not chosen or not chosen <= applied:
                raise ValueError(f"SignaturePolicy.{name} is empty or outside what this module applies")
        if ENVELOPED not in self.transforms:
            raise ValueError("SignaturePolicy.transforms must hold enveloped-signature")


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


def _policy(location: str, policy: SignaturePolicy, certificate: x509.Certificate) -> SignatureConfiguration:
    return SignatureConfiguration(
        # Whether a certificate is valid, and at which moment, is the Trust port's decision (the
        # caller's check_certificate, or the node judging a checker's answer): signxml must not
        # refuse it first against the wall clock, turning "signer not trusted" into "bad signature".
        verification_time=certificate.not_valid_before_utc,
        require_x509=True,
        location=location,
        expect_references=1,
        signature_methods=policy.signature_methods,
        digest_algorithms=policy.digest_algorithms,
        # XMLDSig turns a node-set into octets with Canonical XML 1.0 when no transform says
        # otherwise; signxml's own default is 1.1, which the policy does not allow.
        default_reference_c14n_method=CanonicalizationMethod.CANONICAL_XML_1_0,
    )


def _signature_at(root: etree._Element, location: str) -> etree._Element:
    found = root.findall(f"{location}ds:Signature", _NS)
    if not found:
        raise SignatureInvalid("the package is not signed (no ds:Signature where one is required)")
    if len(found) > 1:
        raise SignatureInvalid("more than one ds:Signature where exactly one is allowed")
    return found[0]


def _shown(value: str) -> str:
    """A value from the signature, quoted and cut short, for a refusal message."""
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")


_SHOWN = 120


def _name(node: etree._Element) -> str:
    qname = etree.QName(node)
    return f"ds:{qname.localname}" if qname.namespace == DS else _shown(qname.text)


def _children(
    parent: etree._Element, counts: dict[str, tuple[int, int | None]]
) -> dict[str, list[etree._Element]]:
    """The ds children of ``parent`` by local name, each within its (least, most) count (``None``:
    no most). Any other element, and text between them, is refused; comments are skipped, as they
    never change what a reference or an algorithm says."""
    if (parent.text or "").strip() or any((child.tail or "").strip() for child in parent):
        # The XMLDSig schema lets KeyInfo (and the algorithm elements) hold text: it means nothing.
        raise SignatureInvalid(f"{_name(parent)} holds text between its elements")
    found: dict[str, list[etree._Element]] = {name: [] for name in counts}
    for child in parent.iterchildren(etree.Element):
        qname = etree.QName(child)
        if qname.namespace != DS or qname.localname not in counts:
            raise SignatureInvalid(
                f"{_name(parent)} holds {_name(child)}, which the signature policy refuses"
            )
        found[qname.localname].append(child)
    for name, (least, most) in counts.items():
        if len(found[name]) < least or (most is not None and len(found[name]) > most):
            wanted = "exactly one is required" if least == most == 1 else f"at least {least} is required"
            raise SignatureInvalid(f"{_name(parent)} holds {len(found[name])} ds:{name}; {wanted}")
    return found


def _only(parent: etree._Element, name: str) -> etree._Element:
    return _children(parent, {name: (1, 1)})[name][0]


def _bare(node: etree._Element) -> None:
    """An algorithm element says its algorithm and nothing else: parameters (HMAC lengths, XPath
    expressions, InclusiveNamespaces) would change what is signed, and none is supported."""
    if len(node) or (node.text or "").strip():
        raise SignatureInvalid(f"{_name(node)} has content; parameters of an algorithm are refused")


def _algorithm(
    node: etree._Element, allowed: Collection[str], refusal: Callable[[str], SignatureInvalid]
) -> str:
    """The Algorithm of ``node`` if ``allowed`` holds it and the element holds nothing else."""
    uri = node.get("Algorithm")
    if uri is None:
        raise SignatureInvalid(f"{_name(node)} has no Algorithm")
    if uri not in allowed:
        raise refusal(uri)
    _bare(node)
    return uri


def _base64(node: etree._Element) -> bytes:
    # base64Binary allows white space anywhere; everything else must be the base64 alphabet.
    text = "".join((node.text or "").split())
    if not text or len(node):
        raise SignatureInvalid(f"{_name(node)} is empty; it must hold base64")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or a character outside ASCII
        raise SignatureInvalid(f"{_name(node)} is not valid base64") from exc


def _check_reference(reference: etree._Element, policy: SignaturePolicy) -> None:
    uri = reference.get("URI")
    if uri != "":
        found = "no URI" if uri is None else f"URI={_shown(uri)}"
        raise SignatureInvalid(
            f'the ds:Reference has {found}; only the whole document (URI="") may be signed'
        )
    parts = _children(reference, {"Transforms": (1, 1), "DigestMethod": (1, 1), "DigestValue": (1, 1)})
    transforms = _children(parts["Transforms"][0], {"Transform": (1, None)})["Transform"]
    algorithms = [
        _algorithm(
            t,
            policy.transforms,
            lambda uri: SignatureInvalid(
                f"transform {_shown(uri)} is not accepted; only enveloped-signature, then at most one "
                "XML canonicalization (exclusive, or inclusive 1.0, with or without comments)"
            ),
        )
        for t in transforms
    ]
    if algorithms[0] != ENVELOPED or len(algorithms) > 2 or ENVELOPED in algorithms[1:]:
        # Without enveloped-signature the digest would cover the signature itself. Any other
        # order or repetition would matter to a verifier that applies transforms as listed, and
        # signxml applies them in an order of its own: refuse rather than guess which is meant.
        raise SignatureInvalid(
            "the transforms must be enveloped-signature, then at most one canonicalization, not "
            + _shown(", ".join(algorithms))
        )
    digest = _algorithm(
        parts["DigestMethod"][0],
        {d.value for d in policy.digest_algorithms},
        lambda uri: SignatureAlgorithmRefused(f"digest algorithm {_shown(uri)} is not accepted; use SHA-256"),
    )
    size = digest_algorithm_implementations[DigestAlgorithm(digest)]().digest_size
    if len(_base64(parts["DigestValue"][0])) != size:
        raise SignatureInvalid(f"the ds:DigestValue is not a {size}-byte digest")


def check_policy(signature: etree._Element, policy: SignaturePolicy | None = None) -> None:
    """Refuse a ``ds:Signature`` that says anything ``policy`` does not allow, before any maths.

    Raises :class:`SignatureInvalid` (:class:`SignatureAlgorithmRefused` for a signature or
    digest algorithm) naming the element or URI it found, never the document's text.
    """
    policy = policy or SignaturePolicy()
    parts = _children(signature, {"SignedInfo": (1, 1), "SignatureValue": (1, 1), "KeyInfo": (1, 1)})
    signed_info = _children(
        parts["SignedInfo"][0],
        {"CanonicalizationMethod": (1, 1), "SignatureMethod": (1, 1), "Reference": (1, 1)},
    )
    _algorithm(
        signed_info["CanonicalizationMethod"][0],
        policy.canonicalizations,
        lambda uri: SignatureInvalid(
            f"CanonicalizationMethod {_shown(uri)} is not accepted; use XML canonicalization "
            "(exclusive, or inclusive 1.0, with or without comments)"
        ),
    )
    _algorithm(
        signed_info["SignatureMethod"][0],
        {m.value for m in policy.signature_methods},
        lambda uri: SignatureAlgorithmRefused(
            f"signature algorithm {_shown(uri)} is not accepted; use RSA-SHA256 or ECDSA-SHA256"
        ),
    )
    _check_reference(signed_info["Reference"][0], policy)
    _base64(parts["SignatureValue"][0])
    # One certificate and nothing beside it: a KeyValue or a second certificate could name another key.
    _base64(_only(_only(parts["KeyInfo"][0], "X509Data"), "X509Certificate"))


def _certificate_of(signature: etree._Element) -> x509.Certificate:
    cert = signature.find("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)
    if cert is None:
        raise SignatureInvalid("the signature carries no X.509 certificate in KeyInfo")
    try:
        return x509.load_der_x509_certificate(_base64(cert))
    except ValueError as exc:
        raise SignatureInvalid("the certificate in KeyInfo cannot be read") from exc


def verify_enveloped(
    root: etree._Element,
    *,
    location: str,
    check_certificate: Callable[[x509.Certificate], T],
    policy: SignaturePolicy | None = None,
) -> tuple[Verified, T]:
    """Verify the one signature at ``location`` (an ElementPath prefix such as ``./`` or
    ``./{ns}edXMLHeader/``) and return what it signed plus ``check_certificate``'s verdict.

    The signature is first held to ``policy`` (:func:`check_policy`; the default policy when
    none is given). ``check_certificate`` runs next, still before any signature maths, and
    raises to refuse the signer; its errors pass through unchanged. Raises
    :class:`SignatureInvalid` (or :class:`SignatureAlgorithmRefused`) saying why the signature
    itself is refused; no error of signxml, lxml or cryptography escapes.
    """
    policy = policy or SignaturePolicy()
    signature = _signature_at(root, location)
    check_policy(signature, policy)
    certificate = _certificate_of(signature)
    verdict = check_certificate(certificate)
    try:
        result = XMLVerifier().verify(
            root, x509_cert=certificate, expect_config=_policy(location, policy, certificate)
        )
    except InvalidDigest as exc:
        raise SignatureInvalid("the signed content was changed after signing (digest mismatch)") from exc
    except InvalidCertificate as exc:
        raise SignatureInvalid(f"the signing certificate is not usable: {exc}") from exc
    except (InvalidSignature, cryptography.exceptions.InvalidSignature) as exc:
        raise SignatureInvalid("the signature value does not verify") from exc
    except etree.LxmlError as exc:
        # signxml checks ds:Signature against the XMLDSig schema, which edxml.xsd leaves to us
        # (lax), and canonicalises with libxml2, which refuses some trees (relative namespace URIs).
        raise SignatureInvalid(f"the signature is malformed: {_cut(str(exc))}") from exc
    except SignXMLException as exc:  # InvalidInput and the rest of signxml's own refusals
        raise SignatureInvalid(f"the signature is malformed: {_cut(str(exc))}") from exc
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        # What signxml lets through from a shape the policy should already have refused
        # (an unknown enum value, base64 of None): still the client's signature, not our fault.
        raise SignatureInvalid(f"the signature is malformed ({type(exc).__name__})") from exc
    if not isinstance(result, VerifyResult) or result.signed_xml is None:
        raise SignatureInvalid("the signed content is not XML")
    return Verified(result.signed_xml, result.signed_data, certificate), verdict


def _cut(message: str) -> str:
    return message if len(message) <= 300 else message[:300] + "…"
