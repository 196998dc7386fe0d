"""Issuing the dev PKI's keys and certificates: the root CA, one CA per network, and leaves.

Only the dev CA (``gateway.infra.files``) and the console's operator certificates issue;
everything else only decides trust (:mod:`gateway.crypto.pki`), so issuing is a module of
its own. Pure: no files, no network, no clock; the caller passes ``now``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.crypto.pki import (
    DOCUMENT_SIGNING,
    TLS_EKUS,
    KeyType,
    PrivateKey,
    PublicKey,
    Role,
    fingerprint,
    require_aware,
    unit_of,
)
from gateway.domain.vocabulary import Network
from gateway.errors import CryptoError

# Backdate notBefore so a peer whose clock lags a little still accepts a fresh certificate.
_BACKDATE = timedelta(minutes=5)


def generate_key(kind: KeyType) -> PrivateKey:
    """A fresh private key of ``kind`` (RSA with e=65537, or EC on P-256)."""
    if kind is KeyType.P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = 2048 if kind is KeyType.RSA2048 else 3072
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


# --- builders -----------------------------------------------------------------------------------


def _window(now: datetime, days: int, issuer: x509.Certificate | None) -> tuple[datetime, datetime]:
    require_aware(now, "now")
    if days <= 0:
        raise ValueError(f"days must be positive, not {days}")
    start = now.replace(microsecond=0) - _BACKDATE
    end = now.replace(microsecond=0) + timedelta(days=days)
    if issuer is not None:
        # A certificate must not outlive (or predate) its issuer, or the chain breaks at the edges.
        start = max(start, issuer.not_valid_before_utc)
        end = min(end, issuer.not_valid_after_utc)
        if start >= end:
            raise CryptoError(
                f"issuer {issuer.subject.rfc4514_string()} is not valid at {now:%Y-%m-%dT%H:%M:%SZ}"
            )
    return start, end


def _ski(public: PublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(_public(issuer))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _public(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CryptoError(f"certificate {fingerprint(cert)[:16]}…: unsupported key type {type(key).__name__}")
    return key


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def make_root_ca(key: PrivateKey, name: str, now: datetime, days: int) -> x509.Certificate:
    """A self-signed root CA certificate with subject ``CN=name``."""
    start, end = _window(now, days, None)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_intermediate_ca(
    key: PrivateKey,
    network: Network,
    root_cert: x509.Certificate,
    root_key: PrivateKey,
    now: datetime,
    days: int,
) -> x509.Certificate:
    """The intermediate CA of ``network`` (``CN=Dev <network> CA, OU=<network>``), path length 0."""
    start, end = _window(now, days, root_cert)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"Dev {network.value} CA"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, network.value),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(_aki(root_cert), critical=False)
        .sign(root_key, hashes.SHA256())
    )


def _leaf_usage(role: Role, public: PublicKey) -> tuple[x509.KeyUsage, x509.ExtendedKeyUsage | None]:
    is_rsa = isinstance(public, rsa.RSAPublicKey)
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    eku: x509.ExtendedKeyUsage | None = None
    if role is Role.TLS:
        flags["digital_signature"] = True
        flags["key_encipherment"] = is_rsa  # RSA key exchange in old TLS suites; meaningless for EC
        eku = x509.ExtendedKeyUsage(sorted(TLS_EKUS, key=lambda oid: oid.dotted_string))
    elif role is Role.SIGN:
        flags["digital_signature"] = True
        flags["content_commitment"] = True
        eku = x509.ExtendedKeyUsage([DOCUMENT_SIGNING])
    elif role is Role.ENCRYPT:
        if is_rsa:
            flags["key_encipherment"] = True
            flags["data_encipherment"] = True
        else:
            flags["key_agreement"] = True
    else:
        raise ValueError(f"make_leaf issues end-entity certificates; role {role.value!r} is not one")
    return x509.KeyUsage(**flags), eku


def make_leaf(
    key_public: PublicKey,
    *,
    code: str,
    name: str,
    network: Network,
    role: Role,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    now: datetime,
    days: int,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
) -> x509.Certificate:
    """An end-entity certificate ``CN=code, O=name, OU=role`` issued by ``issuer_cert``.

    ``network`` must be the network of ``issuer_cert`` (its OU); the certificate itself
    does not name it, verifiers derive it from the issuer.
    """
    if unit_of(issuer_cert.subject) != network.value:
        raise ValueError(
            f"issuer {issuer_cert.subject.rfc4514_string()} is not the {network.value} network CA"
        )
    if not code:
        raise ValueError("a certificate needs a non-empty code")
    usage, eku = _leaf_usage(role, key_public)
    start, end = _window(now, days, issuer_cert)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, code),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(key_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(_ski(key_public), critical=False)
        .add_extension(_aki(issuer_cert), critical=False)
    )
    if eku is not None:
        builder = builder.add_extension(eku, critical=False)
    alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())
