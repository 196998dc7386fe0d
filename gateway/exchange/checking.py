"""The CPU phase of a submission: bounded hardened parse, schema, the sender's signature, and the
facts read from what it signed; and the encryption of a classified package. Pure — a body in
(bytes, or the spool file a large one was written to as it arrived), a frozen :class:`Checked`
out, no store, trust or clock — so that a node can run it in worker processes with a CPU budget
(``gateway.runtime.checkers``) and ``gateway.exchange.intake`` does the rest. A spooled package's
ciphertext is written to a spool file beside it (:func:`ciphertext_file`), never sent back whole."""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from gateway.crypto.xmldsig import verify_enveloped
from gateway.crypto.xmlenc import EncryptionRecipient, encrypt_element
from gateway.domain.body import Body, Spooled, body_bytes
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
from gateway.domain.xmlsafe import XmlLimits, parse_xml, parse_xml_file
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


def _in_clear(raw: Body) -> Body:
    """The bytes, or a spool file the parser can map; a sealed spool file (an agency's upload, maybe
    classified) is opened into this checker's memory, never written back to disk in clear."""
    return body_bytes(raw) if isinstance(raw, Spooled) and raw.key is not None else raw


def _parsed(raw: Body, limits: XmlLimits) -> etree._Element:
    """The one hardened parser, over the bytes or over the spool file (mapped, not read whole)."""
    return (
        parse_xml(raw, limits=limits) if isinstance(raw, bytes) else parse_xml_file(raw.path, limits=limits)
    )


def check_package(raw: Body, limits: XmlLimits) -> Checked:
    """The CPU work of a submission: bounded hardened parse, schema, signature, signed facts.

    Needs no store, trust or clock; the signer's certificate is judged afterwards by the caller
    (``Checked.certificate``), so a package signed by a stranger costs this much and no more.
    Raises the ``ClientError`` that refuses the package.
    """
    raw = _in_clear(raw)
    root = _parsed(raw, limits)
    unverified = validate_package(root)
    # Verification happens in place and changes the tree in one way only: it drops comments
    # (a URI="" reference does not digest them). Without one, the verified tree is the tree read
    # above, node for node, and reading it again (a fifth of this function) gives the same facts.
    # With one, it is read again: the reading skips comments too (``value_of``), but what the
    # gateway acts on should not rest on that.
    commented = next(root.iter(etree.Comment), None) is not None
    if legacy_signature_only(root):
        raise SignatureRejected(LEGACY_SIGNATURE_ONLY)
    try:
        verified, _ = verify_enveloped(
            root, location=signature_location(root), check_certificate=_bounded_certificate
        )
    except SignatureInvalid as exc:
        raise SignatureRejected.from_crypto(exc) from exc
    package = read_package(verified.signed) if commented or verified.signed is not root else unverified
    # A classified package is stored encrypted: neither its attachments' names nor spans in it
    # mean anything at rest, and the names must never be stored in clear.
    plain = isinstance(package, Edoc) and package.classification is Classification.NONE
    facts = _attachment_facts(raw, verified.signed) if plain else ()
    return Checked(package, verified.signed_digest, verified.certificate.public_bytes(Encoding.DER), facts)


def _attachment_facts(raw: Body, signed: etree._Element) -> tuple[AttachmentFacts, ...]:
    """The attachments' facts and spans, over the bytes or over the spool file mapped (never read
    whole into this process: the scan and the span checks read it in place)."""
    if isinstance(raw, bytes):
        return attachment_facts(raw, signed)
    with open(raw.path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return attachment_facts(mapped, signed)  # type: ignore[arg-type]  # a buffer like bytes


CIPHERTEXT_SUFFIX = ".enc"


def ciphertext_file(raw: Spooled) -> str:
    """Where the ciphertext of a spooled package goes: beside it, owner-only, created empty here
    by the node before the job (a checker only opens it), so that the request's clean-up, which
    removes both, can never race a checker creating it afresh."""
    path = raw.derived(CIPHERTEXT_SUFFIX)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    return path


def encrypt_package(
    raw: Body, limits: XmlLimits, recipients: Sequence[EncryptionRecipient], *, out: str | None = None
) -> Body:
    """Sign-then-encrypt: the package exactly as its sender signed it, encrypted for ``recipients``
    (``raw`` has passed :func:`check_package`; it is parsed again because a tree cannot cross
    into a worker process, and parsing is the cheap part). With ``out`` (a file made by
    :func:`ciphertext_file`), the ciphertext is written there and named by its size and digest."""
    ciphertext = bytes(etree.tostring(encrypt_element(_parsed(_in_clear(raw), limits), recipients)))
    if out is None:
        return ciphertext
    fd = os.open(out, os.O_WRONLY | os.O_TRUNC)  # never O_CREAT: see ciphertext_file
    try:
        view = memoryview(ciphertext)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return Spooled(out, len(ciphertext), hashlib.sha256(ciphertext).hexdigest())


class PackageWork(Protocol):
    """Where the CPU phase runs. A node gives ``gateway.runtime.checkers.CheckerPool``: worker
    processes, a CPU budget per package, a bounded queue served fairly between agencies.
    ``agency`` (the authenticated caller) is whose turn the work counts against."""

    async def check(self, raw: Body, limits: XmlLimits, *, agency: str) -> Checked: ...

    async def encrypt(
        self, raw: Body, limits: XmlLimits, recipients: Sequence[EncryptionRecipient], *, agency: str
    ) -> Body:
        """The ciphertext: bytes for a package in memory, a spool file (:func:`ciphertext_file`)
        for a spooled one."""
        ...


class InlineWork:
    """The CPU phase in the calling thread: for use cases driven directly (the unit tests), where
    no event loop serves anyone else. No budget: nothing here can stop a running parse."""

    async def check(self, raw: Body, limits: XmlLimits, *, agency: str) -> Checked:
        return check_package(raw, limits)

    async def encrypt(
        self, raw: Body, limits: XmlLimits, recipients: Sequence[EncryptionRecipient], *, agency: str
    ) -> Body:
        out = ciphertext_file(raw) if isinstance(raw, Spooled) else None
        return encrypt_package(raw, limits, recipients, out=out)
