"""The agency side: what an agency's document system does with its own keys.

Signs packages before sending, and opens what the gateway delivers: verifies
its network adapter's seal, then the sender's own signature inside. The CLI
uses it; so do the tests, exactly as an agency would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from lxml import etree

from gateway.adapters.devpki import agency_paths, load_key_pair
from gateway.crypto.pki import CertIdentity, Role
from gateway.crypto.xmldsig import sign_enveloped, verify_enveloped
from gateway.edxml import DS, Edoc, Status, parse_xml, q, read_package
from gateway.errors import BadRequest, ConfigError, CryptoError, SignerNotTrusted
from gateway.intake import SENDER_SIGNATURE_AT
from gateway.levels import Network
from gateway.ports import Trust
from gateway.transfer import Transfer, package_digest_of
from gateway.transfer import read as read_transfer


def sign_package(certs_dir: Path, code: str, root: etree._Element) -> bytes:
    """Sign an edXML package with agency ``code``'s dev signing key (at edXMLHeader/ds:Signature)."""
    crt, key_path = agency_paths(certs_dir, code, Role.SIGN)
    if not crt.exists():
        raise ConfigError(f"no dev signing certificate for agency {code} in {certs_dir}")
    cert, key, _ = load_key_pair(crt, key_path)
    header = root.find(q("edXMLHeader"))
    if header is None:
        raise BadRequest("the package has no edXMLHeader to put the signature in")
    if header.find(f"{{{DS}}}Signature") is None:
        etree.SubElement(header, f"{{{DS}}}Signature", {"Id": "placeholder"}, nsmap={"ds": DS})
    return bytes(etree.tostring(sign_enveloped(root, key, [cert]), xml_declaration=True, encoding="UTF-8"))


@dataclass(frozen=True)
class Opened:
    """A delivered document, both signatures checked."""

    transfer: Transfer
    package: bytes  # the sender's signed edXML package, as the sender signed it
    content: Edoc | Status
    signer: CertIdentity


def open_delivery(sealed: bytes, *, trust: Trust, network: Network, at: datetime) -> Opened:
    """Verify the seal of ``network``'s adapter, then the sender's signature; refuse on any doubt."""

    def seal_check(cert: x509.Certificate) -> CertIdentity:
        return trust.adapter(cert, network=network, at=at)

    verified, _ = verify_enveloped(parse_xml(sealed), location="./", check_certificate=seal_check)
    transfer = read_transfer(verified.signed)
    package = bytes(etree.tostring(transfer.package, xml_declaration=True, encoding="UTF-8"))

    def sender_check(cert: x509.Certificate) -> CertIdentity:
        return trust.signer(cert, at=at)

    def adapter_or_sender(cert: x509.Certificate) -> CertIdentity:
        # A 01 receipt is signed on the recipient's side by its network adapter.
        try:
            return sender_check(cert)
        except SignerNotTrusted:
            return trust.adapter(cert, network=transfer.routing.source, at=at)

    check = sender_check if transfer.routing.kind == "edoc" else adapter_or_sender
    inner, signer = verify_enveloped(
        parse_xml(package), location=SENDER_SIGNATURE_AT, check_certificate=check
    )
    content = read_package(inner.signed)
    if package_digest_of(inner.signed_data) != transfer.routing.package_digest:
        raise CryptoError("the package is not the one the gateway accepted (digest differs from the routing)")
    if content.sender != transfer.routing.sender:
        raise CryptoError(
            f"the package is from {content.sender} but was carried as from {transfer.routing.sender}"
        )
    if transfer.routing.kind == "edoc" and signer.code != content.sender:
        raise CryptoError(f"the document is signed by {signer.code} but claims to be from {content.sender}")
    return Opened(transfer, package, content, signer)
