"""The dev PKI: files on disk, and the trust decision for real keys and certificates."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.crypto.issuing import generate_key, make_intermediate_ca, make_leaf, make_root_ca
from gateway.crypto.pki import KeyType, PrivateKey, Role, TrustAnchors, fingerprint
from gateway.domain.vocabulary import Network
from gateway.errors import CertificateRejected, ConfigError, CryptoError
from gateway.infra.files.pki_dir import (
    adapter_paths,
    agency_paths,
    load_key_pair,
    load_trust_anchors,
    server_paths,
)
from gateway.infra.files.pki_init import ensure_dev_pki

NOW = datetime.now(UTC)
AGENCIES = [
    ("000.00.00.G22", "Văn phòng Chính phủ", Network.GOVERNMENT),
    ("000.00.00.H01", "Văn phòng Trung ương Đảng", Network.PARTY),
    ("000.00.00.M01", "Ủy ban Trung ương Mặt trận Tổ quốc Việt Nam", Network.FRONT),
]
G22 = "000.00.00.G22"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    certs = tmp_path_factory.mktemp("pki") / "certs"
    ensure_dev_pki(certs, agencies=AGENCIES, now=NOW)
    return certs


@pytest.fixture(scope="module")
def anchors(pki: Path) -> TrustAnchors:
    return load_trust_anchors(pki)


def _leaf(certs: Path, code: str, role: Role) -> x509.Certificate:
    cert, _, _ = load_key_pair(*agency_paths(certs, code, role))
    return cert


def _ca(certs: Path, network: Network) -> tuple[x509.Certificate, PrivateKey]:
    base = certs / "networks" / network.value
    cert, key, _ = load_key_pair(base / "ca.crt", base / "ca.key")
    return cert, key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- files on disk ------------------------------------------------------------------------------


def test_layout_modes_and_idempotence(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    created = ensure_dev_pki(certs, agencies=AGENCIES, now=NOW)

    expected = {certs / "root-ca.crt", certs / "root-ca.key", certs / "trust.pem"}
    for network in Network:
        expected |= {
            certs / "networks" / network.value / "ca.crt",
            certs / "networks" / network.value / "ca.key",
        }
        for role in (Role.TLS, Role.SIGN):
            expected |= set(adapter_paths(certs, network, role))
    expected |= set(server_paths(certs))
    for code, _, _ in AGENCIES:
        for role in (Role.TLS, Role.SIGN, Role.ENCRYPT):
            expected |= set(agency_paths(certs, code, role))
    on_disk = {p for p in certs.rglob("*") if p.is_file()}
    assert set(created) == expected == on_disk
    assert len(created) == len(expected)  # nothing reported twice

    keys = [p for p in on_disk if p.suffix == ".key"]
    assert len(keys) == 1 + 3 + 6 + 1 + 9
    assert all(_mode(k) == 0o600 for k in keys), {k: oct(_mode(k)) for k in keys}
    assert all(_mode(k.parent) == 0o700 for k in keys)
    assert (certs / "agencies" / G22).is_dir()
    assert (certs / "networks" / "party" / "adapter" / "tls.crt").is_file()

    before = {p: p.read_bytes() for p in on_disk}
    assert ensure_dev_pki(certs, agencies=AGENCIES, now=NOW + timedelta(days=1)) == []
    assert {p: p.read_bytes() for p in certs.rglob("*") if p.is_file()} == before


def test_crt_files_hold_leaf_then_intermediate(pki: Path, anchors: TrustAnchors) -> None:
    leaf, _, rest = load_key_pair(*agency_paths(pki, "000.00.00.H01", Role.TLS))
    assert rest == [anchors.intermediates[Network.PARTY]]
    assert leaf.issuer == rest[0].subject
    ca_pems = (pki / "networks" / "party" / "ca.crt").read_bytes()
    assert ca_pems.count(b"BEGIN CERTIFICATE") == 1
    assert (pki / "trust.pem").read_bytes() == anchors.pem_bundle()
    assert anchors.pem_bundle().count(b"BEGIN CERTIFICATE") == 4


def test_adapter_and_server_certificates(pki: Path, anchors: TrustAnchors) -> None:
    adapter, _, _ = load_key_pair(*adapter_paths(pki, Network.FRONT, Role.SIGN))
    who = anchors.verify(adapter, role=Role.SIGN, at=NOW)
    assert (who.code, who.name, who.network) == ("ADAPTER.FRONT", "Adapter front", Network.FRONT)

    server, _, _ = load_key_pair(*server_paths(pki))
    who = anchors.verify(server, role=Role.TLS, at=NOW)
    assert (who.code, who.network) == ("gateway", Network.GOVERNMENT)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "party", "government", "front"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


@pytest.mark.parametrize("name", ["government", "localhost", "127.0.0.1"])
async def test_a_peer_reaches_the_server_by_its_network_name(pki: Path, name: str) -> None:
    """docker-compose.yml's nodes call each other https://government:8443: a real TLS handshake on
    loopback, checking the server's certificate for that name as aiohttp's client does."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*(str(p) for p in server_paths(pki)))
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(pki / "trust.pem"))
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=name)
        writer.close()
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="elsewhere")
    finally:
        server.close()
        await server.wait_closed()


def test_a_deleted_certificate_is_reissued_for_the_existing_key(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    ensure_dev_pki(certs, agencies=AGENCIES[:1], now=NOW)
    crt, key = agency_paths(certs, G22, Role.SIGN)
    key_bytes = key.read_bytes()
    crt.unlink()
    assert ensure_dev_pki(certs, agencies=AGENCIES[:1], now=NOW) == [crt]
    assert key.read_bytes() == key_bytes
    load_key_pair(crt, key)  # the new certificate is for the kept key

    key.unlink()
    with pytest.raises(CryptoError, match=r"sign\.key does not"):
        ensure_dev_pki(certs, agencies=AGENCIES[:1], now=NOW)


def test_a_recreated_ca_is_noticed(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    ensure_dev_pki(certs, agencies=AGENCIES[:1], now=NOW)
    (certs / "networks" / "government" / "ca.crt").unlink()
    (certs / "networks" / "government" / "ca.key").unlink()
    with pytest.raises(CryptoError, match="not issued by the current CA"):
        ensure_dev_pki(certs, agencies=AGENCIES[:1], now=NOW)


def test_bad_agency_codes_are_refused(tmp_path: Path) -> None:
    for code in ("../evil", "a/b", "..", ".hidden", ""):
        with pytest.raises(ConfigError):
            ensure_dev_pki(tmp_path / "c", agencies=[(code, "x", Network.PARTY)], now=NOW)
    with pytest.raises(ConfigError, match="listed twice"):
        ensure_dev_pki(
            tmp_path / "c",
            agencies=[(G22, "a", Network.PARTY), (G22, "a", Network.FRONT)],
            now=NOW,
        )


def test_a_pki_for_ten_agencies_has_every_file(tmp_path: Path) -> None:
    agencies = [(f"000.00.{i:02}.G01", f"Cơ quan {i}", list(Network)[i % 3]) for i in range(10)]
    created = ensure_dev_pki(tmp_path / "certs", agencies=agencies, now=NOW)
    assert len(created) == 2 + 6 + 12 + 2 + 60 + 1


# --- key files ----------------------------------------------------------------------------------


def test_load_key_pair_refuses_a_readable_key(pki: Path, tmp_path: Path) -> None:
    crt, key = agency_paths(pki, G22, Role.TLS)
    loose = tmp_path / "loose-tls.key"
    loose.write_bytes(key.read_bytes())
    os.chmod(loose, 0o644)
    with pytest.raises(CryptoError, match=r"loose-tls\.key") as info:
        load_key_pair(crt, loose)
    assert "chmod 600" in info.value.message
    os.chmod(loose, 0o600)
    load_key_pair(crt, loose)
    os.chmod(loose, 0o640)
    with pytest.raises(CryptoError, match="group or others"):
        load_key_pair(crt, loose)


def test_load_key_pair_refuses_a_foreign_key_and_missing_files(pki: Path) -> None:
    crt, _ = agency_paths(pki, G22, Role.TLS)
    _, other_key = agency_paths(pki, G22, Role.SIGN)
    with pytest.raises(CryptoError, match="does not belong"):
        load_key_pair(crt, other_key)
    with pytest.raises(CryptoError, match=r"nope\.key"):
        load_key_pair(crt, pki / "nope.key")


# --- trust decisions ----------------------------------------------------------------------------


def test_sign_cert_is_accepted_as_sign_only(pki: Path, anchors: TrustAnchors) -> None:
    cert = _leaf(pki, G22, Role.SIGN)
    who = anchors.verify(cert, role=Role.SIGN, at=NOW)
    assert who.code == G22
    assert who.name == "Văn phòng Chính phủ"
    assert who.role is Role.SIGN
    assert who.network is Network.GOVERNMENT
    assert who.serial == cert.serial_number
    assert who.fingerprint == fingerprint(cert) == cert.fingerprint(hashes.SHA256()).hex()
    assert who.not_after == cert.not_valid_after_utc and who.not_after.tzinfo is not None
    with pytest.raises(CertificateRejected, match="issued for role 'sign', not 'tls'"):
        anchors.verify(cert, role=Role.TLS, at=NOW)
    with pytest.raises(CertificateRejected, match="not 'encrypt'"):
        anchors.verify(cert, role=Role.ENCRYPT, at=NOW)


@pytest.mark.parametrize("issued", [Role.TLS, Role.SIGN, Role.ENCRYPT])
@pytest.mark.parametrize("asked", [Role.TLS, Role.SIGN, Role.ENCRYPT])
def test_each_role_cert_serves_only_its_role(
    pki: Path, anchors: TrustAnchors, issued: Role, asked: Role
) -> None:
    cert = _leaf(pki, "000.00.00.H01", issued)
    if issued is asked:
        assert anchors.verify(cert, role=asked, at=NOW).network is Network.PARTY
    else:
        with pytest.raises(CertificateRejected, match=f"issued for role '{issued}'"):
            anchors.verify(cert, role=asked, at=NOW)


def test_network_comes_from_the_issuing_ca(pki: Path, anchors: TrustAnchors) -> None:
    for code, _, network in AGENCIES:
        cert = _leaf(pki, code, Role.SIGN)
        assert anchors.network_of(cert) is network
        assert anchors.verify(cert, role=Role.SIGN, at=NOW).network is network


def test_expired_and_not_yet_valid(pki: Path, anchors: TrustAnchors) -> None:
    ca_cert, ca_key = _ca(pki, Network.GOVERNMENT)
    later = NOW + timedelta(days=30)
    cert = make_leaf(
        generate_key(KeyType.P256).public_key(),
        code=G22,
        name="x",
        network=Network.GOVERNMENT,
        role=Role.SIGN,
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        now=later,
        days=2,
    )
    assert anchors.verify(cert, role=Role.SIGN, at=later + timedelta(days=1)).code == G22
    with pytest.raises(CertificateRejected, match=r"not valid before \d{4}-"):
        anchors.verify(cert, role=Role.SIGN, at=NOW)
    with pytest.raises(CertificateRejected, match=r"expired on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+07:00"):
        anchors.verify(cert, role=Role.SIGN, at=later + timedelta(days=3))


def test_leaf_never_outlives_its_ca(pki: Path, anchors: TrustAnchors) -> None:
    ca_cert, ca_key = _ca(pki, Network.FRONT)
    cert = make_leaf(
        generate_key(KeyType.P256).public_key(),
        code="X",
        name="x",
        network=Network.FRONT,
        role=Role.TLS,
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        now=NOW,
        days=100_000,
    )
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_unrelated_root_is_rejected(pki: Path, anchors: TrustAnchors, tmp_path: Path) -> None:
    # Same CA names, different keys: only the signature tells them apart.
    other = tmp_path / "other"
    ensure_dev_pki(other, agencies=AGENCIES, now=NOW)
    stranger = _leaf(other, G22, Role.SIGN)
    assert stranger.issuer == anchors.intermediates[Network.GOVERNMENT].subject
    with pytest.raises(CertificateRejected, match="not issued by a trusted network CA"):
        anchors.verify(stranger, role=Role.SIGN, at=NOW)


def test_cert_from_an_unknown_issuer_name_is_rejected(anchors: TrustAnchors) -> None:
    leaf = _forge(
        generate_key(KeyType.P256), issuer=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Evil CA")])
    )
    with pytest.raises(CertificateRejected, match="not issued by a trusted network CA"):
        anchors.verify(leaf, role=Role.SIGN, at=NOW)
    with pytest.raises(CertificateRejected, match="not issued by a trusted network CA"):
        anchors.network_of(leaf)


def _forge(
    signer: PrivateKey,
    *,
    issuer: x509.Name,
    subject: x509.Name | None = None,
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """A sign-role certificate built by hand, so any field can be wrong."""
    subject = subject or x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, G22),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forged"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "sign"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public or signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, ca, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")]), critical=False)
        .sign(signer, hashes.SHA256())
    )


def test_self_signed_cert_posing_as_issued_by_the_ca_is_rejected(anchors: TrustAnchors) -> None:
    intermediate = anchors.intermediates[Network.GOVERNMENT]
    key = generate_key(KeyType.P256)
    # Issuer name right, signature by its own key.
    leaf = _forge(key, issuer=intermediate.subject)
    with pytest.raises(CertificateRejected, match="signature does not verify"):
        anchors.verify(leaf, role=Role.SIGN, at=NOW)
    # Self-signed with the intermediate's own subject: a fake CA by the same name.
    fake_ca = _forge(key, issuer=intermediate.subject, subject=intermediate.subject, ca=True)
    with pytest.raises(CertificateRejected, match="not issued by a trusted network CA"):
        anchors.verify(fake_ca, role=Role.SIGN, at=NOW)
    # And a leaf signed by that fake CA.
    leaf2 = _forge(key, issuer=fake_ca.subject, public=generate_key(KeyType.P256).public_key())
    with pytest.raises(CertificateRejected, match="signature does not verify"):
        anchors.verify(leaf2, role=Role.SIGN, at=NOW)


def test_ca_certificates_are_not_leaves(pki: Path, anchors: TrustAnchors) -> None:
    ca_cert, ca_key = _ca(pki, Network.PARTY)
    # A CA-flagged cert really signed by the party CA (which the PKI would never issue).
    sub_ca = _forge(ca_key, issuer=ca_cert.subject, public=generate_key(KeyType.P256).public_key(), ca=True)
    with pytest.raises(CertificateRejected, match="is a CA certificate"):
        anchors.verify(sub_ca, role=Role.SIGN, at=NOW)
    with pytest.raises(CertificateRejected, match="not issued by a trusted network CA"):
        anchors.verify(anchors.intermediates[Network.PARTY], role=Role.SIGN, at=NOW)
    with pytest.raises(ValueError):
        anchors.verify(_leaf(pki, G22, Role.SIGN), role=Role.CA, at=NOW)


def test_key_usage_must_match_even_when_ou_does(pki: Path, anchors: TrustAnchors) -> None:
    ca_cert, ca_key = _ca(pki, Network.PARTY)
    # OU says sign, but the CA issued it with TLS usage only.
    tls_like = make_leaf(
        generate_key(KeyType.P256).public_key(),
        code="X",
        name="x",
        network=Network.PARTY,
        role=Role.TLS,
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        now=NOW,
        days=1,
    )
    forged_ou = (
        x509.CertificateBuilder(extensions=list(tls_like.extensions))
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "X"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "sign"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(generate_key(KeyType.P256).public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(CertificateRejected, match="key usage does not permit role 'sign'"):
        anchors.verify(forged_ou, role=Role.SIGN, at=NOW)
    assert anchors.verify(tls_like, role=Role.TLS, at=NOW).code == "X"


def test_encrypt_cert_that_could_sign_is_rejected(pki: Path, anchors: TrustAnchors) -> None:
    ca_cert, ca_key = _ca(pki, Network.PARTY)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "X"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "encrypt"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(generate_key(KeyType.P256).public_key())
        .serial_number(2)
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(CertificateRejected, match="key usage does not permit role 'encrypt'"):
        anchors.verify(cert, role=Role.ENCRYPT, at=NOW)


@pytest.mark.parametrize(
    ("weak_key", "reason"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA key of 1024 bits"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "curve secp256k1 is not allowed"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "curve secp521r1 is not allowed"),
    ],
)
def test_weak_leaf_keys_are_rejected(
    pki: Path, anchors: TrustAnchors, weak_key: Callable[[], PrivateKey], reason: str
) -> None:
    ca_cert, ca_key = _ca(pki, Network.GOVERNMENT)
    key = weak_key()
    cert = make_leaf(
        key.public_key(),
        code="X",
        name="x",
        network=Network.GOVERNMENT,
        role=Role.TLS,
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        now=NOW,
        days=1,
    )
    with pytest.raises(CertificateRejected, match=reason):
        anchors.verify(cert, role=Role.TLS, at=NOW)


SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")


@pytest.mark.parametrize(
    ("oid", "name"),
    [(bytes.fromhex("06092a864886f70d010105"), "sha1"), (bytes.fromhex("06092a864886f70d010104"), "md5")],
)
def test_weak_signature_hashes_are_rejected(anchors: TrustAnchors, oid: bytes, name: str) -> None:
    # cryptography refuses to sign with SHA-1/MD5, so relabel the algorithm in the DER.
    signer = generate_key(KeyType.RSA2048)
    der = _forge(signer, issuer=anchors.intermediates[Network.PARTY].subject).public_bytes(
        serialization.Encoding.DER
    )
    assert der.count(SHA256_WITH_RSA) == 2
    weak = x509.load_der_x509_certificate(der.replace(SHA256_WITH_RSA, oid))
    assert weak.signature_hash_algorithm is not None and weak.signature_hash_algorithm.name == name
    with pytest.raises(CertificateRejected, match=f"signed with {name}"):
        anchors.verify(weak, role=Role.SIGN, at=NOW)


def test_naive_time_is_a_bug(pki: Path, anchors: TrustAnchors) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        anchors.verify(_leaf(pki, G22, Role.SIGN), role=Role.SIGN, at=datetime.now())


# --- key types ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", [KeyType.RSA2048, KeyType.P256])
def test_key_types_work_end_to_end(tmp_path: Path, key_type: KeyType) -> None:
    certs = tmp_path / "certs"
    ensure_dev_pki(certs, agencies=AGENCIES[:1], now=NOW, key_type=key_type)
    anchors = load_trust_anchors(certs)
    want = rsa.RSAPrivateKey if key_type is KeyType.RSA2048 else ec.EllipticCurvePrivateKey
    for role in (Role.TLS, Role.SIGN, Role.ENCRYPT):
        cert, key, chain = load_key_pair(*agency_paths(certs, G22, role))
        assert isinstance(key, want)
        assert chain == [anchors.intermediates[Network.GOVERNMENT]]
        assert anchors.verify(cert, role=role, at=NOW).role is role
    encrypt = _leaf(certs, G22, Role.ENCRYPT).extensions.get_extension_for_class(x509.KeyUsage).value
    if key_type is KeyType.RSA2048:
        assert encrypt.key_encipherment and not encrypt.key_agreement
        root_key = anchors.root.public_key()
        assert isinstance(root_key, rsa.RSAPublicKey) and root_key.key_size == 2048
    else:
        assert encrypt.key_agreement and not encrypt.key_encipherment
    assert not encrypt.digital_signature


def test_generate_key_kinds() -> None:
    rsa3072 = generate_key(KeyType.RSA3072)
    assert isinstance(rsa3072, rsa.RSAPrivateKey) and rsa3072.key_size == 3072
    assert rsa3072.public_key().public_numbers().e == 65537
    p256 = generate_key(KeyType.P256)
    assert isinstance(p256, ec.EllipticCurvePrivateKey) and isinstance(p256.curve, ec.SECP256R1)


def test_trust_anchors_refuse_an_intermediate_from_another_root(tmp_path: Path) -> None:
    root_key, other_key = generate_key(KeyType.P256), generate_key(KeyType.P256)
    root = make_root_ca(root_key, "Root", NOW, 10)
    other = make_root_ca(other_key, "Root", NOW, 10)
    good = make_intermediate_ca(generate_key(KeyType.P256), Network.PARTY, root, root_key, NOW, 10)
    bad = make_intermediate_ca(generate_key(KeyType.P256), Network.FRONT, other, other_key, NOW, 10)
    TrustAnchors(root, {Network.PARTY: good})
    with pytest.raises(CryptoError, match="front network CA certificate is not signed by the root CA"):
        TrustAnchors(root, {Network.PARTY: good, Network.FRONT: bad})
    with pytest.raises(CryptoError, match="OU 'party', not 'front'"):
        TrustAnchors(root, {Network.FRONT: good})
