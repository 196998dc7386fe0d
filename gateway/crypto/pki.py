"""The dev PKI in memory: its vocabulary (roles, key types, encodings) and the trust decision for a leaf.

One root CA, one intermediate CA per network (path length 0), and end-entity
certificates with exactly one role each (``tls``, ``sign`` or ``encrypt``).
Pure: no files, no network, no clock; the caller passes ``now`` / ``at``.

Making keys and certificates lives in :mod:`gateway.crypto.issuing`: only the dev CA
issues, while every node, agency and verifier decides trust, and each side can then
be read (and changed) without the other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TypeAlias, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.domain.clock import shown
from gateway.domain.vocabulary import Network
from gateway.errors import CertificateRejected, CryptoError

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_E = TypeVar("_E", bound=x509.ExtensionType)

# id-kp-documentSigning (RFC 9336); cryptography has no constant for it.
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")

MIN_RSA_BITS = 2048
ALLOWED_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1)
ALLOWED_SIGNATURE_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (
    hashes.SHA256,
    hashes.SHA384,
    hashes.SHA512,
)

# What a TLS certificate of this PKI carries, for both ends of a mutually authenticated connection.
TLS_EKUS = frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH})


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
            if unit_of(cert.subject) != network.value:
                raise CryptoError(
                    f"the {label} certificate has OU {unit_of(cert.subject)!r}, not {network.value!r}"
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
        require_aware(at, "at")
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
    return shown(t)  # Vietnam time, +07:00 said: the one rule for times in messages


def require_aware(t: datetime, what: str) -> None:
    """Refuse a naive datetime (a bug: every time in the PKI is aware); ``what`` names it."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")


def unit_of(name: x509.Name) -> str | None:
    """The one OU of ``name`` (a network CA's network, a leaf's role), or None if not exactly one."""
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
    bc = _extension(cert, x509.BasicConstraints, f"the {label} certificate", CryptoError)
    if bc is None or not bc.ca:
        raise CryptoError(f"the {label} certificate is not a CA certificate")
    if path_length is not None and bc.path_length != path_length:
        raise CryptoError(
            f"the {label} certificate must have path length {path_length}, not {bc.path_length}"
        )
    _check_key(cert, f"the {label} certificate", error=CryptoError)


def _extension(
    cert: x509.Certificate, kind: type[_E], who: str, error: type[CryptoError] = CertificateRejected
) -> _E | None:
    """The extension ``kind`` of ``cert``, or None; one that cannot be read refuses the certificate."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension) as exc:  # cryptography parses extensions on first use
        raise error(f"{who}: its extensions cannot be read ({exc})") from exc


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
    bc = _extension(cert, x509.BasicConstraints, who)
    if bc is None:
        raise CertificateRejected(f"{who}: has no basic constraints extension")
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
    ku = _extension(cert, x509.KeyUsage, who)
    if ku is None:
        raise CertificateRejected(f"{who}: has no key usage extension")
    ekus = set(_extension(cert, x509.ExtendedKeyUsage, who) or ())
    ok: bool
    if role is Role.TLS:
        ok = ku.digital_signature and TLS_EKUS.issubset(ekus)
    elif role is Role.SIGN:
        ok = ku.digital_signature and ku.content_commitment and DOCUMENT_SIGNING in ekus
    else:
        # An encryption key must not also sign: that is the point of separate roles.
        transport = ku.key_encipherment if isinstance(public, rsa.RSAPublicKey) else ku.key_agreement
        ok = transport and not (ku.digital_signature or ku.content_commitment)
    if not ok:
        raise CertificateRejected(f"{who}: its key usage does not permit role {role.value!r}")
