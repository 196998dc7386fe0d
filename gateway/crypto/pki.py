"""The dev PKI in memory: keys, certificate builders, and the trust decision for a leaf.

One root CA, one intermediate CA per network (path length 0), and end-entity
certificates with exactly one role each (``tls``, ``sign`` or ``encrypt``).
Pure: no files, no network, no clock; the caller passes ``now`` / ``at``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.domain.vocabulary import Network
from gateway.errors import CryptoError

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# id-kp-documentSigning (RFC 9336); cryptography has no constant for it.
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")

MIN_RSA_BITS = 2048
ALLOWED_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1)
ALLOWED_SIGNATURE_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (
    hashes.SHA256,
    hashes.SHA384,
    hashes.SHA512,
)

_TLS_EKUS = frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH})

# Backdate notBefore so a peer whose clock lags a little still accepts a fresh certificate.
_BACKDATE = timedelta(minutes=5)


class CertificateRejected(CryptoError):
    """A certificate is not trusted for the asked role at the asked time; the message says why."""


class KeyType(enum.StrEnum):
    """Key algorithms the dev PKI can generate."""

    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    P256 = "p256"


class Role(enum.StrEnum):
    """What a certificate may be used for; each end-entity certificate has exactly one."""

    TLS = "tls"  # TLS client and server authentication
    SIGN = "sign"  # document signing (non-repudiation)
    ENCRYPT = "encrypt"  # key transport (RSA) or key agreement (EC) for encryption
    CA = "ca"


def generate_key(kind: KeyType) -> PrivateKey:
    """A fresh private key of ``kind`` (RSA with e=65537, or EC on P-256)."""
    if kind is KeyType.P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = 2048 if kind is KeyType.RSA2048 else 3072
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


# --- builders -----------------------------------------------------------------------------------


def _window(now: datetime, days: int, issuer: x509.Certificate | None) -> tuple[datetime, datetime]:
    _require_aware(now, "now")
    if days <= 0:
        raise ValueError(f"days must be positive, not {days}")
    start = now.replace(microsecond=0) - _BACKDATE
    end = now.replace(microsecond=0) + timedelta(days=days)
    if issuer is not None:
        # A certificate must not outlive (or predate) its issuer, or the chain breaks at the edges.
        start = max(start, issuer.not_valid_before_utc)
        end = min(end, issuer.not_valid_after_utc)
        if start >= end:
            raise CryptoError(f"issuer {issuer.subject.rfc4514_string()} is not valid at {_when(now)}")
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
        raise CryptoError(
            f"certificate {_short(fingerprint(cert))}: unsupported key type {type(key).__name__}"
        )
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
        eku = x509.ExtendedKeyUsage(sorted(_TLS_EKUS, key=lambda oid: oid.dotted_string))
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
    if _ou(issuer_cert.subject) != network.value:
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


# --- encodings ----------------------------------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM; the caller must store it owner-only."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    return cert.fingerprint(hashes.SHA256()).hex()


def key_label(key: PrivateKey | PublicKey | x509.Certificate) -> str:
    """A key's algorithm and size as ``KeyType`` spells them (``p256``, ``rsa3072``; ``p384`` …)."""
    public = key if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return f"rsa{public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return {"secp256r1": "p256", "secp384r1": "p384"}.get(public.curve.name, public.curve.name)
    return type(public).__name__


# --- trust --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertIdentity:
    """Who a verified end-entity certificate belongs to and what it may do."""

    code: str  # subject CN: agency code or adapter code
    name: str  # subject O
    role: Role
    network: Network  # from the issuing intermediate
    serial: int
    fingerprint: str  # lowercase hex SHA-256 of the DER
    not_before: datetime  # aware UTC
    not_after: datetime  # aware UTC


@dataclass(frozen=True)
class _Ca:
    network: Network
    cert: x509.Certificate
    not_before: datetime
    not_after: datetime


class TrustAnchors:
    """The root CA and the intermediate CA of each network; decides whether a leaf is trusted.

    The CA chain (root self-signed, each intermediate issued by the root, CA flags, network OU)
    is checked once here, so :meth:`verify` only does the leaf's own signature and fields.
    """

    __slots__ = ("_by_subject", "_intermediates", "_root", "_root_window")

    def __init__(self, root: x509.Certificate, intermediates: Mapping[Network, x509.Certificate]) -> None:
        _check_ca(root, issuer=root, label="root CA", path_length=None)
        by_subject: dict[x509.Name, _Ca] = {}
        for network, cert in intermediates.items():
            label = f"{network.value} network CA"
            _check_ca(cert, issuer=root, label=label, path_length=0)
            if _ou(cert.subject) != network.value:
                raise CryptoError(
                    f"the {label} certificate has OU {_ou(cert.subject)!r}, not {network.value!r}"
                )
            if cert.subject in by_subject or cert.subject == root.subject:
                raise CryptoError(f"the {label} certificate's subject is not unique")
            by_subject[cert.subject] = _Ca(network, cert, cert.not_valid_before_utc, cert.not_valid_after_utc)
        if not by_subject:
            raise CryptoError("no network CA certificates: nothing can be trusted")
        self._root = root
        self._root_window = (root.not_valid_before_utc, root.not_valid_after_utc)
        self._by_subject = by_subject
        self._intermediates = MappingProxyType({ca.network: ca.cert for ca in by_subject.values()})

    @property
    def root(self) -> x509.Certificate:
        """The root CA certificate."""
        return self._root

    @property
    def intermediates(self) -> Mapping[Network, x509.Certificate]:
        """The intermediate CA certificate of each network (read-only)."""
        return self._intermediates

    def network_of(self, cert: x509.Certificate) -> Network:
        """The network whose CA names itself issuer of ``cert``; says nothing about trust (see ``verify``)."""
        ca = self._by_subject.get(cert.issuer)
        if ca is None:
            raise CertificateRejected(
                f"certificate {_short(fingerprint(cert))}: not issued by a trusted network CA"
            )
        return ca.network

    def pem_bundle(self) -> bytes:
        """Root then intermediates (in ``Network`` order) as PEM, for clients and TLS contexts."""
        order = sorted(self._by_subject.values(), key=lambda ca: list(Network).index(ca.network))
        return cert_pem(self._root) + b"".join(cert_pem(ca.cert) for ca in order)

    def verify(self, cert: x509.Certificate, *, role: Role, at: datetime) -> CertIdentity:
        """Check ``cert`` is an end-entity certificate of a network CA, valid at ``at``, for ``role``.

        Raises :class:`CertificateRejected` with a one-line reason; returns who it belongs to.
        """
        if role is Role.CA:
            raise ValueError("verify() checks end-entity certificates; role 'ca' is not one")
        _require_aware(at, "at")
        fp = fingerprint(cert)
        who = f"certificate {_short(fp)}"
        ca = self._by_subject.get(cert.issuer)
        if ca is None:
            raise CertificateRejected(f"{who}: not issued by a trusted network CA")
        _check_signature_hash(cert, who)
        try:
            cert.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertificateRejected(
                f"{who}: not issued by a trusted network CA (signature does not verify)"
            ) from exc
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        _check_time(who, not_before, not_after, at)
        _check_time(f"the {ca.network.value} network CA", ca.not_before, ca.not_after, at)
        _check_time("the root CA", *self._root_window, at)
        public = _check_key(cert, who)
        _check_end_entity(cert, who)
        code, name, ou = _subject(cert, who)
        if ou != role.value:
            raise CertificateRejected(f"{who}: issued for role {ou!r}, not {role.value!r}")
        _check_usage(cert, who, role, public)
        return CertIdentity(
            code=code,
            name=name,
            role=role,
            network=ca.network,
            serial=cert.serial_number,
            fingerprint=fp,
            not_before=not_before,
            not_after=not_after,
        )


# --- checks -------------------------------------------------------------------------------------


def _short(fp: str) -> str:
    return f"{fp[:16]}…"


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _require_aware(t: datetime, what: str) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")


def _ou(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(values[0].value) if len(values) == 1 else None


def _check_ca(
    cert: x509.Certificate, *, issuer: x509.Certificate, label: str, path_length: int | None
) -> None:
    _check_signature_hash(cert, f"the {label} certificate")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        by = "itself" if issuer is cert else "the root CA"
        raise CryptoError(f"the {label} certificate is not signed by {by}") from exc
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CryptoError(f"the {label} certificate is not a CA certificate")
    if path_length is not None and bc.path_length != path_length:
        raise CryptoError(
            f"the {label} certificate must have path length {path_length}, not {bc.path_length}"
        )
    _check_key(cert, f"the {label} certificate", error=CryptoError)


def _check_signature_hash(cert: x509.Certificate, who: str) -> None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise CertificateRejected(f"{who}: signed with an unsupported algorithm") from exc
    if not isinstance(algorithm, ALLOWED_SIGNATURE_HASHES):
        used = algorithm.name if algorithm is not None else "no separate hash"
        raise CertificateRejected(f"{who}: signed with {used}; only SHA-256/384/512 are accepted")


def _check_time(who: str, not_before: datetime, not_after: datetime, at: datetime) -> None:
    if at < not_before:
        raise CertificateRejected(f"{who}: not valid before {_when(not_before)}")
    if at > not_after:
        raise CertificateRejected(f"{who}: expired on {_when(not_after)}")


def _check_key(
    cert: x509.Certificate, who: str, *, error: type[CryptoError] = CertificateRejected
) -> PublicKey:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise error(f"{who}: unreadable or unsupported public key") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise error(f"{who}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise error(f"{who}: EC curve {key.curve.name} is not allowed (only P-256 and P-384)")
        return key
    raise error(f"{who}: {type(key).__name__} keys are not allowed (only RSA and EC)")


def _check_end_entity(cert: x509.Certificate, who: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as exc:
        raise CertificateRejected(f"{who}: has no basic constraints extension") from exc
    if bc.ca:
        raise CertificateRejected(f"{who}: is a CA certificate, not an end-entity one")


def _subject(cert: x509.Certificate, who: str) -> tuple[str, str, str]:
    out: list[str] = []
    for oid, label in (
        (NameOID.COMMON_NAME, "CN"),
        (NameOID.ORGANIZATION_NAME, "O"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "OU"),
    ):
        values = cert.subject.get_attributes_for_oid(oid)
        if len(values) != 1 or not values[0].value:
            raise CertificateRejected(f"{who}: subject must have exactly one {label}")
        out.append(str(values[0].value))
    return out[0], out[1], out[2]


def _check_usage(cert: x509.Certificate, who: str, role: Role, public: PublicKey) -> None:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CertificateRejected(f"{who}: has no key usage extension") from exc
    try:
        ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = set()
    ok: bool
    if role is Role.TLS:
        ok = ku.digital_signature and _TLS_EKUS.issubset(ekus)
    elif role is Role.SIGN:
        ok = ku.digital_signature and ku.content_commitment and DOCUMENT_SIGNING in ekus
    else:
        # An encryption key must not also sign: that is the point of separate roles.
        transport = ku.key_encipherment if isinstance(public, rsa.RSAPublicKey) else ku.key_agreement
        ok = transport and not (ku.digital_signature or ku.content_commitment)
    if not ok:
        raise CertificateRejected(f"{who}: its key usage does not permit role {role.value!r}")
