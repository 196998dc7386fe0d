"""The CPU phase of a submission: bounded hardened parse, schema, the sender's signature, and the
facts read from what it signed; and the encryption of a classified package. Pure — bytes in, a
frozen :class:`Checked` out, no store, trust or clock — so that a node can run it in worker
processes with a CPU budget (``gateway.runtime.checkers``) and ``gateway.exchange.intake`` does
the rest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from gateway.crypto.xmldsig import verify_enveloped
from gateway.crypto.xmlenc import EncryptionRecipient, encrypt_element
from gateway.domain.edxml import (
    LEGACY_SIGNATURE_ONLY,
    AttachmentFacts,
    Edoc,
    Status,
    attachment_facts,
    legacy_signature_only,
    read_package,
    signature_location,
    validate_package,
)
from gateway.domain.vocabulary import Classification
from gateway.domain.xmlsafe import XmlLimits, parse_xml
from gateway.errors import SignatureInvalid, SignatureRejected

# A real agency certificate is 1-2 KB. The store phase parses and fingerprints the signer's
# certificate on the event loop, so one the size of the whole package is refused here.
MAX_CERTIFICATE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Checked:
    """What the CPU phase found in a package: only what the signature verifier returned as signed
    (the routing facts read from the signed tree, and the digest of the signed bytes), plus the
    certificate the verifier checked the signature with, for ``Trust`` to judge; for an
    unclassified edoc, the facts of its attachments (digests and spans, never their bytes: this
    crosses back from a checker process)."""

    package: Edoc | Status
    signed_digest: str
    certificate: bytes  # DER
    attachments: tuple[AttachmentFacts, ...] = ()


def _bounded_certificate(cert: x509.Certificate) -> None:
    size = len(cert.public_bytes(Encoding.DER))
    if size > MAX_CERTIFICATE_BYTES:
        raise SignatureRejected(
            f"the certificate in KeyInfo is {size} bytes; at most {MAX_CERTIFICATE_BYTES} are accepted"
        )


def check_package(raw: bytes, limits: XmlLimits) -> Checked:
    """The CPU work of a submission: bounded hardened parse, schema, signature, signed facts.

    Needs no store, trust or clock; the signer's certificate is judged afterwards by the caller
    (``Checked.certificate``), so a package signed by a stranger costs this much and no more.
    Raises the ``ClientError`` that refuses the package.
    """
    root = parse_xml(raw, limits=limits)
    validate_package(root)
    if legacy_signature_only(root):
        raise SignatureRejected(LEGACY_SIGNATURE_ONLY)
    try:
        verified, _ = verify_enveloped(
            root, location=signature_location(root), check_certificate=_bounded_certificate
        )
    except SignatureInvalid as exc:
        raise SignatureRejected.from_crypto(exc) from exc
    package = read_package(verified.signed)
    # A classified package is stored encrypted: neither its attachments' names nor spans in it
    # mean anything at rest, and the names must never be stored in clear.
    plain = isinstance(package, Edoc) and package.classification is Classification.NONE
    facts = attachment_facts(raw, verified.signed) if plain else ()
    return Checked(package, verified.signed_digest, verified.certificate.public_bytes(Encoding.DER), facts)


def encrypt_package(raw: bytes, limits: XmlLimits, recipients: Sequence[EncryptionRecipient]) -> bytes:
    """Sign-then-encrypt: the package exactly as its sender signed it, encrypted for ``recipients``
    (``raw`` has passed :func:`check_package`; it is parsed again because a tree cannot cross
    into a worker process, and parsing is the cheap part)."""
    return bytes(etree.tostring(encrypt_element(parse_xml(raw, limits=limits), recipients)))


class PackageWork(Protocol):
    """Where the CPU phase runs. A node gives ``gateway.runtime.checkers.CheckerPool``: worker
    processes, a CPU budget per package, a bounded queue served fairly between agencies.
    ``agency`` (the authenticated caller) is whose turn the work counts against."""

    async def check(self, raw: bytes, limits: XmlLimits, *, agency: str) -> Checked: ...

    async def encrypt(
        self, raw: bytes, limits: XmlLimits, recipients: Sequence[EncryptionRecipient], *, agency: str
    ) -> bytes: ...


class InlineWork:
    """The CPU phase in the calling thread: for use cases driven directly (the unit tests), where
    no event loop serves anyone else. No budget: nothing here can stop a running parse."""

    async def check(self, raw: bytes, limits: XmlLimits, *, agency: str) -> Checked:
        return check_package(raw, limits)

    async def encrypt(
        self, raw: bytes, limits: XmlLimits, recipients: Sequence[EncryptionRecipient], *, agency: str
    ) -> bytes:
        return encrypt_package(raw, limits, recipients)
