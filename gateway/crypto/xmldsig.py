"""Enveloped XML signatures (XMLDSig) under one strict policy: RSA-SHA256 or ECDSA-SHA256, SHA-256 digests.

Elements in, a frozen :class:`Verified` out. The caller passes a ``check_certificate``
callable that decides whether the certificate in KeyInfo may sign here (chain,
role, agency, revocation); this module only does XML and maths.

Wrapping defence: the signature must sit at one pinned place, reference the
whole document (``URI=""``, enveloped), and callers act only on
``Verified.signed`` — the tree the verifier checked, with what a ``URI=""`` reference leaves
out of its digest (comments) taken out, so that nothing read from it is unsigned.

A signature means exactly one thing: before any maths, :func:`check_policy` holds it to a
:class:`SignaturePolicy` — an allow-list of canonicalisations, transforms and algorithms, and
one fixed shape in the schema's order — so no XSLT, XPath or other transform the gateway does not
apply can change what was signed, and no malformed value reaches the XMLDSig library.

The maths is libxmlsec1's (python-xmlsec), in place on the caller's tree: it canonicalises and
digests the document while streaming through it, so a 50 MB package verifies in about 0.25 s with
one copy's worth of memory. signxml (used before issue 13) re-parses the tree with libxml2's
default 10 MB text-node limit and could not read a package with a scanned attachment over 7.5 MB.
The key comes from the certificate the caller judged, never from KeyInfo, and only the policy's
transforms are enabled in libxmlsec1 too.

Refusals are ``SignatureInvalid`` (``SignatureAlgorithmRefused`` for an algorithm
outside the policy), never an HTTP error: the caller decides what a refusal means
to its own caller (``SignatureRejected.from_crypto`` for a client, or a ``DeliveryError``).
"""

from __future__ import annotations

import base64
import copy
import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

import xmlsec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from lxml import etree

from gateway.errors import CryptoError, SignatureAlgorithmRefused, SignatureInvalid

DS = "http://www.w3.org/2000/09/xmldsig#"
_NS = {"ds": DS}
_XS = xmlsec.constants  # libxmlsec1's names for algorithms and key formats
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
EXC_C14N_COMMENTS = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
ALLOWED_SIGNATURE_METHODS = frozenset({RSA_SHA256, ECDSA_SHA256})
ALLOWED_DIGESTS = frozenset({SHA256})
CANONICALIZATIONS = frozenset({EXC_C14N, EXC_C14N_COMMENTS, C14N, C14N_COMMENTS})
# The same allow-list, as libxmlsec1 names it: it refuses any other transform on its own too.
_XMLSEC_C14N = {
    EXC_C14N: _XS.TransformExclC14N,
    EXC_C14N_COMMENTS: _XS.TransformExclC14NWithComments,
    C14N: _XS.TransformInclC14N,
    C14N_COMMENTS: _XS.TransformInclC14NWithComments,
}
_DIGEST_SIZE = {SHA256: 32}

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
    signature_methods: frozenset[str] = ALLOWED_SIGNATURE_METHODS
    digest_algorithms: frozenset[str] = ALLOWED_DIGESTS

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
    """What a verifier vouches for: the signed tree, the digest of its canonical bytes, and who signed it."""

    signed: etree._Element
    digest: bytes  # SHA-256 of the canonical signed bytes: the ds:DigestValue the maths just checked
    certificate: x509.Certificate

    @property
    def signed_digest(self) -> str:
        """SHA-256 (hex) of the canonical signed bytes: equal for equal content, whatever the signature."""
        return self.digest.hex()


@functools.lru_cache(maxsize=256)  # a sender's certificate is at most 64 KB: 16 MB at worst
def _verification_key(certificate_der: bytes) -> xmlsec.Key:
    """libxmlsec1's key of a certificate, loaded once per certificate (by its DER bytes): the
    carriers verify the same few adapter certificates for every document, and loading took as
    long as the verification itself (py-spy, bench/throughput.py). Assigning it to a context
    copies it, so a cached key is never changed; what to trust is decided before, per call.

    Only the public key is loaded (its SubjectPublicKeyInfo), not the certificate: a key loaded
    from a certificate carries it, and every assignment copied the certificate too (65 µs per
    verification against 1 µs, with a P-256 adapter certificate)."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return xmlsec.Key.from_memory(spki, _XS.KeyDataFormatDer)


@functools.lru_cache(maxsize=64)
def _xmlsec_key(key: SigningKey) -> xmlsec.Key:
    """libxmlsec1's copy of a signing key, made once per key (cached by identity: a node holds a
    handful): turning it into PEM and back took a quarter of each seal. Assigning it to a
    context duplicates it there, so one copy serves every signature."""
    return xmlsec.Key.from_memory(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), _XS.KeyDataFormatPem
    )


def _template(method: str, certificate: x509.Certificate) -> etree._Element:
    """A fresh copy of :func:`_template_of`: copying the built element takes a fifth of building
    it, and an adapter signs with the same certificate all day."""
    return copy.deepcopy(_template_of(method, certificate))


@functools.lru_cache(maxsize=64)  # by (method, certificate): a node signs with a handful
def _template_of(method: str, certificate: x509.Certificate) -> etree._Element:
    """The ds:Signature libxmlsec1 fills in (DigestValue, SignatureValue), built with lxml: nodes
    made by libxmlsec1's own template functions carry names outside the document's dictionary, and
    lxml's ``find`` cannot see them until the tree is serialised and parsed again."""

    def sub(parent: etree._Element, name: str, algorithm: str | None = None) -> etree._Element:
        return etree.SubElement(parent, f"{{{DS}}}{name}", {"Algorithm": algorithm} if algorithm else {})

    signature = etree.Element(f"{{{DS}}}Signature", nsmap={"ds": DS})
    signed_info = sub(signature, "SignedInfo")
    sub(signed_info, "CanonicalizationMethod", EXC_C14N)
    sub(signed_info, "SignatureMethod", method)
    reference = sub(signed_info, "Reference")
    reference.set("URI", "")
    transforms = sub(reference, "Transforms")
    sub(transforms, "Transform", ENVELOPED)
    sub(transforms, "Transform", EXC_C14N)
    sub(reference, "DigestMethod", SHA256)
    sub(reference, "DigestValue")
    sub(signature, "SignatureValue")
    data = sub(sub(signature, "KeyInfo"), "X509Data")
    sub(data, "X509Certificate").text = base64.b64encode(certificate.public_bytes(Encoding.DER)).decode(
        "ascii"
    )
    return signature


def sign_enveloped(root: etree._Element, key: SigningKey, chain: list[x509.Certificate]) -> etree._Element:
    """Sign ``root`` as a whole (URI="", enveloped, exclusive canonicalisation, SHA-256) at its one
    ``ds:Signature Id="placeholder"``, in place; returns ``root``.

    ``chain`` is the signer's certificate first; only that one goes into KeyInfo. Raises
    :class:`CryptoError` when the input cannot be signed (no placeholder, or two).
    """
    placeholders = root.xpath("//ds:Signature[@Id='placeholder']", namespaces=_NS)
    if not isinstance(placeholders, list) or len(placeholders) != 1:
        count = len(placeholders) if isinstance(placeholders, list) else 0
        raise CryptoError(
            f"cannot sign the document: it has {count} signature placeholders; "
            "exactly one is required (more than one placeholder is ambiguous)"
        )
    placeholder = placeholders[0]
    assert isinstance(placeholder, etree._Element)
    template = _template(
        ECDSA_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) else RSA_SHA256, chain[0]
    )
    parent = placeholder.getparent()
    assert parent is not None
    template.tail = placeholder.tail
    parent.replace(placeholder, template)
    context = xmlsec.SignatureContext()
    try:
        context.key = _xmlsec_key(key)
        context.sign(template)
    except xmlsec.Error as exc:
        raise CryptoError(f"cannot sign the document: {exc}") from exc
    return root


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


_DS_PREFIX = f"{{{DS}}}"
_DS_PREFIX_LENGTH = len(_DS_PREFIX)


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
    order = list(counts)  # the callers list the names in the XMLDSig schema's order
    last = 0
    for child in parent.iterchildren(etree.Element):
        tag = child.tag  # "{namespace}local": read as a string, not through QName (a third of this)
        local = tag[_DS_PREFIX_LENGTH:] if tag.startswith(_DS_PREFIX) else None
        if local is None or local not in counts:
            raise SignatureInvalid(
                f"{_name(parent)} holds {_name(child)}, which the signature policy refuses"
            )
        at = order.index(local)
        if at < last:
            raise SignatureInvalid(
                f"the signature is malformed: {_name(parent)} holds ds:{local} after "
                f"ds:{order[last]}; the XMLDSig schema fixes their order"
            )
        last = at
        found[local].append(child)
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
        # an XMLDSig library may apply them in an order of its own: refuse rather than guess.
        raise SignatureInvalid(
            "the transforms must be enveloped-signature, then at most one canonicalization, not "
            + _shown(", ".join(algorithms))
        )
    digest = _algorithm(
        parts["DigestMethod"][0],
        policy.digest_algorithms,
        lambda uri: SignatureAlgorithmRefused(f"digest algorithm {_shown(uri)} is not accepted; use SHA-256"),
    )
    size = _DIGEST_SIZE[digest]
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
        policy.signature_methods,
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
    itself is refused; no error of libxmlsec1, lxml or cryptography escapes.

    Verifies in place; on success the comments of ``root`` are removed (a ``URI=""`` reference
    does not digest them), so that ``Verified.signed`` — ``root`` itself — holds only signed text.
    """
    policy = policy or SignaturePolicy()
    signature = _signature_at(root, location)
    check_policy(signature, policy)
    certificate = _certificate_of(signature)
    verdict = check_certificate(certificate)
    signed_info = signature[0]
    canonical = signed_info.find("ds:CanonicalizationMethod", _NS)
    reference = signed_info.find("ds:Reference", _NS)
    assert canonical is not None and reference is not None  # check_policy pinned the shape
    context = xmlsec.SignatureContext()
    try:
        context.key = _verification_key(certificate.public_bytes(Encoding.DER))
    except xmlsec.Error as exc:
        raise SignatureInvalid("the signing certificate is not usable: its key cannot be loaded") from exc
    for uri in policy.transforms:
        context.enable_reference_transform(_XMLSEC_C14N.get(uri, _XS.TransformEnveloped))
    for uri in policy.canonicalizations:
        context.enable_signature_transform(_XMLSEC_C14N[uri])
    for method in (_XS.TransformRsaSha256, _XS.TransformEcdsaSha256, _XS.TransformSha256):
        context.enable_signature_transform(method)
        context.enable_reference_transform(method)
    try:
        context.verify(signature)
    except xmlsec.VerificationError as exc:
        if _signed_info_verifies(signed_info, signature, certificate, canonical.get("Algorithm", "")):
            raise SignatureInvalid("the signed content was changed after signing (digest mismatch)") from exc
        raise SignatureInvalid("the signature value does not verify") from exc
    except xmlsec.Error as exc:
        raise SignatureInvalid(f"the signature is malformed: {_cut(str(exc))}") from exc
    digest_value = reference.find("ds:DigestValue", _NS)
    assert digest_value is not None
    digest = _base64(digest_value)
    etree.strip_elements(root, etree.Comment, with_tail=False)
    return Verified(root, digest, certificate), verdict


def _signed_info_verifies(
    signed_info: etree._Element, signature: etree._Element, certificate: x509.Certificate, c14n: str
) -> bool:
    """Whether SignatureValue is right over SignedInfo: after libxmlsec1 refused the signature,
    this tells a changed document (digest mismatch) from a wrong signature, for the message only."""
    value_node = signature.find("ds:SignatureValue", _NS)
    if value_node is None:
        return False
    canonical = etree.tostring(
        signed_info,
        method="c14n",
        exclusive=c14n in (EXC_C14N, EXC_C14N_COMMENTS),
        with_comments=c14n in (EXC_C14N_COMMENTS, C14N_COMMENTS),
    )
    value = _base64(value_node)
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(value, canonical, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            half = len(value) // 2
            r, s = int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big")
            key.verify(encode_dss_signature(r, s), canonical, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _cut(message: str) -> str:
    return message if len(message) <= 300 else message[:300] + "…"
