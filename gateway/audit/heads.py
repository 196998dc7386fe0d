"""Signed heads: the node's signature over the newest record of the delivery log.

A head is a detached signature (ECDSA or RSA-PSS, SHA-256) over a canonical JSON message
(purpose, seq, hash, signed_at, node) rather than XMLDSig: the log holds no XML, the message is
150 bytes with one obvious byte form, and an auditor can check it with any crypto library and
the trust anchors, nothing else. Only a network adapter's signing certificate may sign one.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from gateway.audit.log import utc_text
from gateway.crypto.pki import CertIdentity, PrivateKey, Role, TrustAnchors, cert_pem
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import AuditError, CertificateRejected, CryptoError

_HEAD_PURPOSE = "edxml-gateway audit head v1"


@dataclass(frozen=True)
class SignedHead:
    """The node's signature over the newest record's (seq, hash) at ``signed_at``."""

    seq: int
    hash: str
    signed_at: str
    node: str
    signer: str
    algorithm: str  # ecdsa-sha256 | rsa-pss-sha256
    signature: str  # base64
    certificate: str  # the adapter's signing certificate, PEM


def head_message(seq: int, hash_: str, signed_at: str, node: str) -> bytes:
    return json.dumps(
        {"purpose": _HEAD_PURPOSE, "seq": seq, "hash": hash_, "signed_at": signed_at, "node": node},
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")


def sign_head(
    *, seq: int, hash_: str, at: datetime, node: str, key: PrivateKey, certificate: x509.Certificate
) -> SignedHead:
    signed_at = utc_text(at)
    message = head_message(seq, hash_, signed_at, node)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm, signature = "ecdsa-sha256", key.sign(message, ec.ECDSA(hashes.SHA256()))
    else:
        algorithm, signature = "rsa-pss-sha256", key.sign(message, _PSS, hashes.SHA256())
    return SignedHead(
        seq=seq,
        hash=hash_,
        signed_at=signed_at,
        node=node,
        signer=certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value,  # type: ignore[arg-type]
        algorithm=algorithm,
        signature=base64.b64encode(signature).decode("ascii"),
        certificate=cert_pem(certificate).decode("ascii"),
    )


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def check_head(
    head: SignedHead,
    anchors: TrustAnchors,
    known: dict[str, tuple[x509.Certificate, CertIdentity]] | None = None,
) -> CertIdentity:
    """The head's certificate is a network adapter's signing certificate, valid when it signed,
    and the signature verifies; raises ``AuditError`` saying which of these fails.

    ``known`` caches certificates already judged (a year of heads is a few certificates)."""
    try:
        at = datetime.fromisoformat(head.signed_at.replace("Z", "+00:00"))
        cached = known.get(head.certificate) if known is not None else None
        if cached is not None and cached[1].not_before <= at <= cached[1].not_after:
            cert, identity = cached
        else:
            cert = x509.load_pem_x509_certificate(head.certificate.encode("ascii"))
            identity = anchors.verify(cert, role=Role.SIGN, at=at)
            if known is not None:
                known[head.certificate] = (cert, identity)
    except (ValueError, CertificateRejected) as exc:
        raise AuditError(f"head {head.seq} signed at {head.signed_at}: certificate refused: {exc}") from exc
    if identity.code != adapter_code(identity.network):
        raise AuditError(f"head {head.seq} is signed by {identity.code}, which is not a network adapter")
    public = cert.public_key()
    message = head_message(head.seq, head.hash, head.signed_at, head.node)
    try:
        signature = base64.b64decode(head.signature, validate=True)
        if head.algorithm == "ecdsa-sha256" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif head.algorithm == "rsa-pss-sha256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, _PSS, hashes.SHA256())
        else:
            raise AuditError(f"head {head.seq}: algorithm {head.algorithm!r} does not fit its certificate")
    except (ValueError, InvalidSignature) as exc:
        raise AuditError(
            f"head {head.seq} signed at {head.signed_at}: the signature does not verify"
        ) from exc
    return identity


def anchors_from_pem(data: bytes) -> TrustAnchors:
    """Trust anchors from a ``trust.pem`` bundle alone (root CA plus one CA per network)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise AuditError("the trust anchors file holds no readable PEM certificate") from exc
    roots = [c for c in certs if c.subject == c.issuer]
    if len(roots) != 1:
        raise AuditError(f"the trust anchors file must hold exactly one root CA, not {len(roots)}")
    intermediates: dict[Network, x509.Certificate] = {}
    for cert in certs:
        ou = cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATIONAL_UNIT_NAME)
        if cert is not roots[0] and ou and str(ou[0].value) in {n.value for n in Network}:
            intermediates[Network(str(ou[0].value))] = cert
    try:
        return TrustAnchors(roots[0], intermediates)
    except CryptoError as exc:
        raise AuditError(f"trust anchors: {exc.message}") from exc
