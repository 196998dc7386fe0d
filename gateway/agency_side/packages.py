"""The agency side: what an agency's document system does with its own keys.

Signs packages before sending, and opens what the gateway delivers: verifies
its network adapter's seal over the transfer header, checks the package that
came beside it against the digest that header names, then decrypts it when
classified and verifies the sender's own signature inside. The CLI
uses it; so do the tests, exactly as an agency would.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from lxml import etree

from gateway.adapters.ports import Trust
from gateway.crypto.pki import CertIdentity, PrivateKey, Role
from gateway.crypto.xmldsig import sign_enveloped, verify_enveloped
from gateway.crypto.xmlenc import XENC, PieceReader, Skeleton, decrypt_streamed, read_encrypted
from gateway.domain.body import PART_BYTES, Body, body_bytes, body_pieces, body_range, body_sha256, body_size
from gateway.domain.edxml import (
    DS,
    Attachment,
    Edoc,
    Organ,
    Status,
    attachments_of,
    build_status,
    header_of,
    read_package,
    signature_location,
)
from gateway.domain.transfer import Transfer, check_carried_digest, package_digest_of, unframe_view
from gateway.domain.transfer import read as read_transfer
from gateway.domain.vocabulary import Network, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import (
    BadRequest,
    ConfigError,
    CryptoError,
    DeliveryError,
    NotARecipient,
    SchemaInvalid,
    SignatureInvalid,
    SignatureRejected,
    SignerNotTrusted,
)
from gateway.infra.files.pki_dir import agency_paths, load_key_pair


def sign_package(certs_dir: Path, code: str, root: etree._Element) -> bytes:
    """Sign an edXML package (rooted at edXML or edXMLEnvelope) with agency ``code``'s dev signing
    key: an enveloped XMLDSig as the last child of edXMLHeader, where the gateway expects it."""
    crt, key_path = agency_paths(certs_dir, code, Role.SIGN)
    if not crt.exists():
        raise ConfigError(f"no dev signing certificate for agency {code} in {certs_dir}")
    cert, key, _ = load_key_pair(crt, key_path)
    try:
        header = header_of(root)
    except SchemaInvalid as exc:
        raise BadRequest(f"cannot sign: {exc.message}") from None
    if header.find(f"{{{DS}}}Signature") is None:
        etree.SubElement(header, f"{{{DS}}}Signature", {"Id": "placeholder"}, nsmap={"ds": DS})
    return bytes(etree.tostring(sign_enveloped(root, key, [cert]), xml_declaration=True, encoding="UTF-8"))


def decryption_keys(certs_dir: Path, code: str) -> list[tuple[PrivateKey, x509.Certificate]]:
    """Agency ``code``'s encryption keys: the current one, then every retired one it kept."""
    crt, key_path = agency_paths(certs_dir, code, Role.ENCRYPT)
    pairs: list[tuple[PrivateKey, x509.Certificate]] = []
    if crt.exists():
        cert, key, _ = load_key_pair(crt, key_path)
        pairs.append((key, cert))
    for old in sorted((crt.parent / "retired").glob("encrypt-*.crt"), reverse=True):
        cert, key, _ = load_key_pair(old, old.with_suffix(".key"))
        pairs.append((key, cert))
    return pairs


def _decrypt(skeleton: Skeleton, keys: Sequence[tuple[PrivateKey, x509.Certificate]]) -> bytearray:
    if not keys:
        raise CryptoError(
            "the document is classified and encrypted; no decryption key of this agency is available"
        )
    for key, cert in keys:
        try:
            return decrypt_streamed(skeleton, private_key=key, certificate=cert)
        except NotARecipient:
            continue  # wrapped for another of our keys (or not for us at all): try the next
    raise NotARecipient("the document is not encrypted for any encryption key this agency holds")


@dataclass(frozen=True)
class Opened:
    """A delivered document, both signatures checked."""

    transfer: Transfer
    package: bytes  # the sender's signed edXML package, as the sender signed it
    sealed: bytes  # the sealed transfer header it came with: what a 01 receipt's digest is over
    content: Edoc | Status
    signer: CertIdentity
    attachments: tuple[Attachment, ...] = ()  # decoded from the verified package, names as sent


def open_delivery(
    delivery: bytes,
    *,
    trust: Trust,
    network: Network,
    at: datetime,
    decryption_keys: Sequence[tuple[PrivateKey, x509.Certificate]] = (),
) -> Opened:
    """Open what ``GET /v1/edocs/{id}`` returned (a sealed header and its package, framed by
    ``gateway.domain.transfer.frame``): verify the seal of ``network``'s adapter, check the package
    against the digest the seal names, decrypt a classified package with one of
    ``decryption_keys`` (current first, then retired ones), then verify the sender's signature
    inside; refuse on any doubt, and never hand out partial plaintext."""
    try:
        sealed, package = unframe_view(delivery)
    except DeliveryError as exc:
        raise CryptoError(f"cannot open the delivery: {exc.message}") from None
    return open_carried(sealed, package, trust=trust, network=network, at=at, decryption_keys=decryption_keys)


def open_carried(
    sealed: bytes,
    package: Body | memoryview,
    *,
    trust: Trust,
    network: Network,
    at: datetime,
    decryption_keys: Sequence[tuple[PrivateKey, x509.Certificate]] = (),
) -> Opened:
    """:func:`open_delivery` of a delivery already unframed: its sealed header, and its package in
    memory or in a spool file (``AgencyClient.fetch`` spools a large one as it arrives, its
    SHA-256 counted on the way). The package is parsed once: a signed one from its bytes; an
    encrypted one as its skeleton, its CipherValue decrypted in pieces
    (``gateway.crypto.xmlenc.decrypt_streamed``), and the plaintext parsed once the tag verified."""

    def seal_check(cert: x509.Certificate) -> CertIdentity:
        return trust.adapter(cert, network=network, at=at)

    try:
        verified, _ = verify_enveloped(parse_xml(sealed), location="./", check_certificate=seal_check)
    except SignatureInvalid as exc:
        raise SignatureRejected.from_crypto(exc) from exc
    transfer = read_transfer(verified.signed)
    size, sha256 = _measured(package)
    try:
        check_carried_digest(transfer, size, sha256)
    except DeliveryError as exc:
        raise CryptoError(f"the delivered package is refused: {exc.message}") from None
    wrong_form = "the package is not in the form (signed or encrypted) its seal names"
    if transfer.package.encrypted:
        skeleton = read_encrypted(_reader(package, size), size)
        if skeleton.element.tag != f"{{{XENC}}}EncryptedData":
            raise CryptoError(wrong_form)
        plaintext = _decrypt(skeleton, decryption_keys)
        # These bytes are exactly what the sender signed: encrypt_element serialized the signed
        # element once and encrypted that; no serializing again (nor parsing twice) here.
        signed_package = bytes(plaintext)
        del plaintext
    else:
        signed_package = bytes(package) if isinstance(package, memoryview) else body_bytes(package)
    carried_root = parse_xml(signed_package, max_bytes=max(len(signed_package), 1))
    if carried_root.tag == f"{{{XENC}}}EncryptedData":  # ciphertext where a signed package belongs
        raise CryptoError(wrong_form)

    def sender_check(cert: x509.Certificate) -> CertIdentity:
        return trust.signer(cert, at=at)

    def adapter_or_sender(cert: x509.Certificate) -> CertIdentity:
        # A 01 receipt is signed on the recipient's side by its network adapter.
        try:
            return sender_check(cert)
        except SignerNotTrusted:
            return trust.adapter(cert, network=transfer.routing.source, at=at)

    check = sender_check if transfer.routing.kind == "edoc" else adapter_or_sender
    try:
        inner, signer = verify_enveloped(
            carried_root, location=signature_location(carried_root), check_certificate=check
        )
    except SignatureInvalid as exc:
        raise SignatureRejected.from_crypto(exc) from exc
    content = read_package(inner.signed)
    if package_digest_of(inner.digest) != transfer.routing.package_digest:
        raise CryptoError("the package is not the one the gateway accepted (digest differs from the routing)")
    if content.sender != transfer.routing.sender:
        raise CryptoError(
            f"the package is from {content.sender} but was carried as from {transfer.routing.sender}"
        )
    if transfer.routing.kind == "edoc" and signer.code != content.sender:
        raise CryptoError(f"the document is signed by {signer.code} but claims to be from {content.sender}")
    if isinstance(content, Edoc) and content.classification is not transfer.routing.classification:
        raise CryptoError("the secrecy level the sender signed differs from the one it was carried under")
    attachments = tuple(attachments_of(inner.signed)) if isinstance(content, Edoc) else ()
    return Opened(transfer, signed_package, sealed, content, signer, attachments)


def _measured(package: Body | memoryview) -> tuple[int, str]:
    """Size and SHA-256 (hex) of the package: a spooled one's was counted as it arrived."""
    if isinstance(package, memoryview):
        return len(package), hashlib.sha256(package).hexdigest()
    return body_size(package), body_sha256(package)


def _reader(package: Body | memoryview, size: int) -> PieceReader:
    """The package's bytes by range for ``read_encrypted``: read whole once (a spool file then
    checked against the SHA-256 counted when it was written), then the CipherValue text again."""

    def read(offset: int, length: int) -> Iterator[bytes]:
        if isinstance(package, memoryview):
            for start in range(offset, offset + length, PART_BYTES):
                yield bytes(package[start : min(start + PART_BYTES, offset + length)])
        elif (offset, length) == (0, size):
            yield from body_pieces(package)
        else:
            yield from body_range(package, offset, length)

    return read


def arrival_receipt(certs_dir: Path, code: str, opened: Opened, *, now: datetime) -> bytes:
    """The recipient's own signed 01 over the digest of exactly the sealed transfer header it
    fetched (``Opened.sealed``, which names the package's digest):
    proof of delivery to this agency, not merely to a gateway (mandatory for classified documents)."""
    if not isinstance(opened.content, Edoc):
        raise BadRequest("only a document (not a status) is acknowledged with a 01 receipt")
    root = build_status(
        sender=Organ(code),
        about_organ=opened.content.sender,
        about_document_id=opened.content.document_id,
        code=StatusCode.ARRIVED,
        now=now,
        delivered_digest=base64.b64encode(hashlib.sha256(opened.sealed).digest()).decode("ascii"),
    )
    return sign_package(certs_dir, code, root)
