"""Certificates over their life: issue, rotate and revoke on a running gateway, with real keys,
real TLS on loopback and a real SQLite file; and the refusals every certificate check owes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.agency_side.packages import decryption_keys, open_delivery, sign_package
from gateway.cli import entry as cli
from gateway.crypto.issuing import generate_key, make_intermediate_ca, make_leaf, make_root_ca
from gateway.crypto.pki import DOCUMENT_SIGNING, KeyType, PrivateKey, Role, cert_pem, fingerprint, key_pem
from gateway.crypto.xmldsig import verify_enveloped
from gateway.domain.edxml import NewEdoc, Organ, build_edoc, build_status
from gateway.domain.transfer import unframe
from gateway.domain.vocabulary import Classification, DeliveryState, Network, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import SignerNotTrusted, Unauthenticated
from gateway.infra.files.atomic import write_atomic
from gateway.infra.files.pki_dir import agency_paths, ca_paths, load_key_pair, read_inventory, server_paths
from gateway.pki.inventory import CertState, Slot
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import Node
from tests.api_contract import contract_session
from tests.conftest import (
    A01,
    G22,
    H41,
    I01,
    client_context,
    set_setting,
    trust_for,
    wait_delivered,
)

GOV_ADAPTER, PARTY_ADAPTER = "ADAPTER.GOVERNMENT", "ADAPTER.PARTY"


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def certs_sync(home: Path, *args: str) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--home", str(home), "certs", *args])
    return Ran(code, out.getvalue(), err.getvalue())


async def certs(home: Path, *args: str) -> Ran:
    """``gateway certs …`` as an officer runs it, beside a node that keeps serving on this loop."""
    return await asyncio.to_thread(certs_sync, home, *args)


def active(config: Config, code: str, role: Role) -> Any:
    record = read_inventory(config.certs).holding(code, role, Slot.ACTIVE)
    assert record is not None, (code, role)
    return record


def edoc(sender: str, recipients: list[str], number: str, level: Classification = Classification.NONE) -> Any:
    return build_edoc(
        NewEdoc(
            sender=Organ(sender),
            recipients=[Organ(r) for r in recipients],
            document_id=f"{sender},2026/11/22,{number}/CERT",
            subject=f"Văn bản số {number} trong lúc xoay vòng chứng thư",
            content="Nội dung",
            classification=level,
        ),
        now=datetime.now(UTC),
    )


def package(
    config: Config,
    sender: str,
    recipients: list[str],
    number: str,
    level: Classification = Classification.NONE,
) -> bytes:
    return sign_package(config.certs, sender, edoc(sender, recipients, number, level))


def answer_03(number: str) -> Any:
    """A01's 03 (accepted) about G22's document ``number``, unsigned."""
    return build_status(
        sender=Organ(A01),
        about_organ=G22,
        about_document_id=f"{G22},2026/11/22,{number}/CERT",
        code=StatusCode.ACCEPTED,
        now=datetime.now(UTC),
    )


async def post(client: Any, body: bytes, level: Classification = Classification.NONE) -> tuple[int, Any]:
    headers = {"X-Classification": level.slug} if level is not Classification.NONE else {}
    async with client.session.post(client.base + "/v1/edocs", data=body, headers=headers) as r:
        return r.status, await r.json()


async def wait_for(predicate: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def seal_fingerprint(config: Config, delivered: bytes, network: Network) -> str:
    """The fingerprint of the adapter certificate that sealed a delivery's transfer header (given
    as fetched, or as the header alone)."""
    sealed = unframe(delivered)[0] if delivered.startswith(b"--gw-") else delivered
    seen: list[str] = []
    trust = trust_for(config)

    def check(cert: x509.Certificate) -> Any:
        seen.append(fingerprint(cert))
        return trust.adapter(cert, network=network, at=datetime.now(UTC))

    verify_enveloped(parse_xml(sealed), location="./", check_certificate=check)
    return seen[0]


# --- forged certificates, chained to this dev PKI (or not) -----------------------------------------


def ca_of(config: Config, network: Network) -> tuple[x509.Certificate, PrivateKey]:
    cert, key, _ = load_key_pair(*ca_paths(config.certs, network))
    return cert, key


def leaf(
    config: Config, code: str, role: Role, *, network: Network, key: PrivateKey | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    key = key or generate_key(KeyType.P256)
    ca_cert, ca_key = ca_of(config, network)
    cert = make_leaf(
        key.public_key(), code=code, name="x", network=network, role=role,
        issuer_cert=ca_cert, issuer_key=ca_key, now=datetime.now(UTC), days=30,
    )  # fmt: skip
    return cert, key


def revalidated(
    config: Config, cert: x509.Certificate, network: Network, start: datetime, end: datetime
) -> x509.Certificate:
    """``cert`` re-issued by its CA with another validity window (make_leaf never goes back in time)."""
    _, ca_key = ca_of(config, network)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(ca_key, hashes.SHA256())


def holder(
    tmp: Path,
    code: str,
    role: Role,
    cert: x509.Certificate,
    key: PrivateKey,
    network: Network,
    config: Config,
) -> Path:
    """A certificate directory where ``code``'s ``role`` pair is the given one (as a forger keeps it)."""
    ca_cert, _ = ca_of(config, network)
    crt, key_path = agency_paths(tmp, code, role)
    write_atomic(key_path, key_pem(key), 0o600, private_dir=True)
    write_atomic(crt, cert_pem(cert) + cert_pem(ca_cert), 0o644, private_dir=True)
    return tmp


def tls_client(config: Config, crt: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(config.certs / "trust.pem"))
    ctx.load_cert_chain(str(crt), str(key))
    return ctx


async def refused_or_status(ctx: ssl.SSLContext, port: int) -> int:
    """The status of GET /v1/inbox over a connection with ``ctx``; 0 if the handshake refused it."""
    try:
        async with (
            contract_session(ctx) as session,
            session.get(f"https://localhost:{port}/v1/inbox") as r,
        ):
            return r.status
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
        return 0


# --- init and the inventory ------------------------------------------------------------------------


def test_init_records_a_realistic_dev_pki(config: Config) -> None:
    inventory = read_inventory(config.certs)
    by = {(r.owner, r.role): r for r in inventory}
    assert by[("ROOT.CA", Role.CA)].network is None
    assert {by[(f"CA.{n.value.upper()}", Role.CA)].network for n in Network} == set(Network)
    for code in (G22, A01, I01, GOV_ADAPTER, PARTY_ADAPTER, "ADAPTER.FRONT"):
        for role in (Role.TLS, Role.SIGN, Role.ENCRYPT):  # adapters get an encryption pair too
            record = by[(code, role)]
            assert record.slot is Slot.ACTIVE and record.state(datetime.now(UTC)) is CertState.ACTIVE
            assert record.issued_by == "gateway init" and record.key_type == "p256"
            cert = x509.load_pem_x509_certificates((config.certs / record.crt).read_bytes())[0]
            assert (
                fingerprint(cert) == record.fingerprint and format(cert.serial_number, "x") == record.serial
            )
            assert (
                cert.subject.rfc4514_string().startswith(f"OU={role.value},")
                and f"CN={code}" in cert.subject.rfc4514_string()
            )
            assert ((config.certs / record.key).stat().st_mode & 0o777) == 0o600
    assert by[("gateway", Role.TLS)].kind.value == "server"
    assert by[(A01, Role.SIGN)].network is Network.PARTY
    ku = x509.load_pem_x509_certificates((config.certs / by[(G22, Role.ENCRYPT)].crt).read_bytes())[
        0
    ].extensions
    assert ku.get_extension_for_class(x509.KeyUsage).value.key_agreement
    assert not ku.get_extension_for_class(x509.KeyUsage).value.digital_signature
    tls = x509.load_pem_x509_certificates((config.certs / by[(G22, Role.TLS)].crt).read_bytes())[0]
    ekus = set(tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}


def test_issue_stages_next_and_rotate_promotes_it_with_each_key_type(home: Path, config: Config) -> None:
    issued = certs_sync(
        home,
        "issue",
        "--agency",
        H41,
        "--role",
        "sign",
        "--key",
        "rsa3072",
        "--days",
        "400",
        "--by",
        "Trần Thị B",
        "--json",
    )
    assert issued.code == 0, issued.err
    staged = issued.json()["certificates"][0]
    assert staged["state"] == "next" and staged["key_type"] == "rsa3072" and "/next/" in staged["crt"]
    assert (
        issued.json()["events"][0] | {"event": "cert_issued", "by": "Trần Thị B", "code": H41}
        == issued.json()["events"][0]
    )
    again = certs_sync(home, "issue", "--agency", H41, "--role", "sign")
    assert (
        again.code == 1 and "already has a next sign certificate" in again.err and again.err.count("\n") == 1
    )

    before = active(config, H41, Role.SIGN)
    rotated = certs_sync(home, "rotate", "--agency", H41, "--role", "sign", "--json")
    assert rotated.code == 0, rotated.err
    now_active = active(config, H41, Role.SIGN)
    assert now_active.serial == staged["serial"] and now_active.predecessor == before.serial
    kept = read_inventory(config.certs).by_fingerprint(before.fingerprint)
    assert kept is not None and kept.slot is Slot.RETIRED and kept.successor == staged["serial"]
    assert kept.state(datetime.now(UTC)) is CertState.RETIRING and "/retired/sign-" in kept.crt
    assert (config.certs / kept.key).stat().st_mode & 0o777 == 0o600
    cert, _, _ = load_key_pair(*agency_paths(config.certs, H41, Role.SIGN))
    assert fingerprint(cert) == staged["fingerprint"]

    rsa = certs_sync(
        home, "rotate", "--agency", H41, "--role", "encrypt", "--key", "rsa2048", "--overlap", "0", "--json"
    )
    assert rsa.code == 0 and rsa.json()["certificates"][0]["key_type"] == "rsa2048"
    listing = certs_sync(home, "list", "--agency", H41, "--json").json()["certificates"]
    states = sorted((c["role"], c["state"], c["key_type"]) for c in listing)
    assert states == [
        ("encrypt", "active", "rsa2048"), ("encrypt", "retired", "p256"), ("sign", "active", "rsa3072"),
        ("sign", "retiring", "p256"), ("tls", "active", "p256"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "--agency", "not a code", "--role", "tls"], "agency code"),
        (["issue", "--agency", "000.00.00.Y99", "--role", "tls"], "no agency 000.00.00.Y99"),
        (["issue", "--agency", G22, "--role", "ca"], "invalid choice"),
        (["issue", "--agency", G22, "--role", "tls", "--days", "0"], "--days must be between 1 and 3650"),
        (["issue", "--agency", G22, "--role", "tls", "--key", "dsa1024"], "invalid choice"),
        (["issue", "--agency", "gateway", "--role", "sign"], "gateway has no sign certificate"),
        (["issue", "--agency", "ADAPTER.MARS", "--role", "tls"], "no network adapter"),
        (["issue", "--agency", G22], "--role tls|sign|encrypt is required with --agency"),
        (["issue", "--role", "tls"], "one of the arguments --agency --operator is required"),
        (["issue", "--agency", G22, "--operator", "ops", "--role", "tls"], "not allowed with argument"),
        (["issue", "--operator", "ops", "--role", "sign"], "an operator holds only a tls certificate"),
        (["issue", "--operator", "no spaces please"], "use letters, digits"),
        (["rotate", "--agency", G22, "--overlap", "soon"], "--overlap must be a number"),
        (["rotate", "--agency", G22, "--overlap", "-1"], "--overlap must be between"),
        (["revoke", "12", "--reason", "x"], "give at least 8 hex digits"),
        (["revoke", "ffffffffffff", "--reason", "x"], "no certificate with serial"),
        (["revoke", "abcdef0123", "--reason", "two\nlines"], "--reason must be one line"),
        (["revoke", "abcdef0123"], "--reason"),
        (["list", "--expiring-within", "many"], "--expiring-within must be a number"),
        (["check", "--within", "-3"], "--within must be between"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_is_refused_in_one_line(home: Path, args: list[str], message: str) -> None:
    ran = certs_sync(home, *args)
    assert ran.code in (1, 2) and message in ran.err, ran.err
    assert ran.err.startswith("gateway: error: ") and ran.err.count("\n") == 1 and not ran.out


def test_export_ca_gives_the_trust_anchors(home: Path, config: Config, tmp_path: Path) -> None:
    ran = certs_sync(home, "export-ca")
    assert ran.code == 0 and ran.out.encode() == (config.certs / "trust.pem").read_bytes()
    out = tmp_path / "anchors.pem"
    described = certs_sync(home, "export-ca", "-o", str(out), "--json").json()
    assert out.read_bytes() == (config.certs / "trust.pem").read_bytes()
    assert described["certificates"][0]["subject"] == "CN=Dev edXML Gateway Root CA"
    assert len(x509.load_pem_x509_certificates(out.read_bytes())) == 4


# --- the trust decision -----------------------------------------------------------------------------


def test_a_cached_verdict_does_not_outlive_a_revocation(home: Path, config: Config) -> None:
    trust = trust_for(config)
    cert, _, _ = load_key_pair(*agency_paths(config.certs, G22, Role.SIGN))
    before = datetime.now(UTC)
    assert trust.signer(cert, at=before).code == G22  # now cached
    generation = trust.generation()
    assert (
        certs_sync(home, "revoke", active(config, G22, Role.SIGN).serial[:12], "--reason", "test").code == 0
    )
    with pytest.raises(SignerNotTrusted, match="revoked on"):
        trust.signer(cert, at=datetime.now(UTC))
    assert trust.signer(cert, at=before).code == G22  # what it signed before stays good
    assert trust.generation() > generation


# --- on a running gateway ---------------------------------------------------------------------------


async def test_rotation_under_load_loses_nothing_and_old_signatures_verify(
    node: Node, config: Config, home: Path, agency: Callable[[str | None], Any]
) -> None:
    # Before the rotation: documents fetched (01 signed by the party adapter) and answered 03 by A01.
    early = []
    for i in range(3):
        status, body = await agency(G22).send(package(config, G22, [A01], f"early-{i}"))
        assert status == 202, body
        early.append(body["id"])
        await wait_delivered(node, body["id"])
        assert (await agency(A01).call("GET", f"/v1/edocs/{body['id']}"))[0] == 200
        answer = answer_03(f"early-{i}")
        status, answered = await agency(A01).call(
            "POST", f"/v1/edocs/{body['id']}/status", sign_package(config.certs, A01, answer)
        )
        assert status == 202, answered
    classified_early = package(config, G22, [A01], "early-secret", Classification.TOI_MAT)
    status, body = await post(agency(G22), classified_early, Classification.TOI_MAT)
    assert status == 202, body
    early.append(body["id"])

    old = {
        (c, r): active(config, c, r)
        for c in (G22, A01, GOV_ADAPTER, PARTY_ADAPTER)
        for r in Role
        if r is not Role.CA
    }
    accepted: list[str] = []
    refused: list[Any] = []
    stop = asyncio.Event()

    async def sender(lane: int, level: Classification) -> None:
        client = agency(G22)  # this session keeps the TLS certificate it started with
        n = 0
        while not stop.is_set():
            n += 1
            body = await asyncio.to_thread(
                package, config, G22, [A01, I01] if not level else [A01], f"{lane}-{n}", level
            )
            status, reply = await post(client, body, level)
            (accepted.append(reply["id"]) if status == 202 else refused.append((status, reply)))

    lanes = [
        asyncio.create_task(sender(k, Classification.TOI_MAT if k == 0 else Classification.NONE))
        for k in range(2)
    ]
    await asyncio.sleep(0.3)
    for args in (
        ["--agency", G22, "--key", "rsa3072"],  # the busiest sender: sign, encrypt and TLS at once
        ["--agency", A01, "--role", "encrypt", "--key", "rsa2048"],  # the recipient, role by role
        ["--agency", A01, "--role", "sign"],
        ["--agency", A01, "--role", "tls"],
        ["--agency", GOV_ADAPTER],  # the adapters that seal and bridge every one of these
        ["--agency", PARTY_ADAPTER],
    ):
        ran = await certs(home, "rotate", *args, "--overlap", "1", "--by", "officer.a")
        assert ran.code == 0, ran.err
        await asyncio.sleep(0.2)
    new_party_seal = active(config, PARTY_ADAPTER, Role.SIGN).fingerprint
    await wait_for(lambda: node._cert_generation == node.trust.generation())
    after_reload = len(accepted)
    await wait_for(lambda: len(accepted) > after_reload + 6)
    stop.set()
    await asyncio.gather(*lanes)

    assert refused == []
    assert len(accepted) > 20
    for doc_id in early + accepted:
        deliveries = await wait_delivered(node, doc_id)
        assert {d.state for d in deliveries} <= {DeliveryState.DELIVERED, DeliveryState.FETCHED}, deliveries

    # Every document opens for its recipient: the party adapter's seal (old or new), the
    # sender's signature (old or new), and A01's decryption keys (current and retired).
    reader = agency(A01)  # a new session: A01's new TLS certificate
    keys = decryption_keys(config.certs, A01)
    assert len(keys) == 2
    seals = set()
    for doc_id in early + accepted:
        status, sealed = await reader.call("GET", f"/v1/edocs/{doc_id}")
        assert status == 200, sealed
        opened = open_delivery(
            sealed, trust=trust_for(config), network=Network.PARTY, at=datetime.now(UTC), decryption_keys=keys
        )
        assert opened.signer.code == G22
        seals.add(seal_fingerprint(config, sealed, Network.PARTY))
    assert seals == {old[(PARTY_ADAPTER, Role.SIGN)].fingerprint, new_party_seal}

    # New work uses the new keys: the new seal, and encryption to A01's new certificate only.
    status, body = await post(
        agency(G22), package(config, G22, [A01], "after", Classification.TOI_MAT), Classification.TOI_MAT
    )
    assert status == 202, body
    await wait_delivered(node, body["id"])
    status, sealed = await reader.call("GET", f"/v1/edocs/{body['id']}")
    assert seal_fingerprint(config, sealed, Network.PARTY) == new_party_seal
    opened = open_delivery(
        sealed, trust=trust_for(config), network=Network.PARTY, at=datetime.now(UTC), decryption_keys=keys[:1]
    )
    assert opened.signer.fingerprint == active(config, G22, Role.SIGN).fingerprint

    # Receipts signed before the rotation (01 by the old party seal, 03 by A01's old key) still verify.
    for doc_id in early[:3]:
        status, receipts = await agency(G22).call("GET", f"/v1/edocs/{doc_id}/receipts")
        rows = [(r["code"], r["signature_valid"]) for r in receipts["recipients"][0]["receipts"]]
        assert rows == [("01", True), ("03", True)], receipts
    rotated = await node.store.events_where(kind_prefix="cert_rotated")
    assert len(rotated) == 3 + 3 + 3 + 3 and {e.detail["by"] for e in rotated} == {"officer.a"}
    assert {e.detail["predecessor"] for e in rotated} == {o.serial for o in old.values()}


async def test_revocation_takes_effect_at_once(
    node: Node, config: Config, home: Path, agency: Callable[[str | None], Any]
) -> None:
    g22, a01 = agency(G22), agency(A01)
    status, body = await g22.send(package(config, G22, [A01], "before"))
    assert status == 202, body
    doc_id = body["id"]
    await wait_delivered(node, doc_id)
    assert (await a01.call("GET", f"/v1/edocs/{doc_id}"))[0] == 200
    answer = answer_03("before")
    status, reply = await a01.call(
        "POST", f"/v1/edocs/{doc_id}/status", sign_package(config.certs, A01, answer)
    )
    assert status == 202, reply
    await wait_delivered(node, reply["id"])
    signed_earlier = package(config, G22, [A01], "signed-before-sent-after")

    # A revoked TLS certificate cannot connect: the very next request on an open session fails.
    assert (await g22.call("GET", "/v1/inbox"))[0] == 200
    tls = active(config, G22, Role.TLS)
    ran = await certs(home, "revoke", tls.serial, "--reason", "laptop stolen", "--by", "officer.b")
    assert ran.code == 0, ran.err
    status, body = await g22.call("GET", "/v1/inbox")
    assert (status, body["error"]) == (401, "unauthenticated") and "revoked on" in body["message"]
    assert (await certs(home, "check")).code == 1  # G22 now has no TLS certificate
    assert (await certs(home, "issue", "--agency", G22, "--role", "tls")).code == 0
    g22 = agency(G22)
    assert (await g22.call("GET", "/v1/inbox"))[0] == 200

    # A signature made after the revocation is refused; what was signed before keeps verifying.
    sign = active(config, G22, Role.SIGN)
    ran = await certs(
        home, "revoke", sign.serial, "--reason", "key compromised", "--by", "officer.b", "--json"
    )
    assert ran.code == 0 and ran.json()["documents_marked"] >= 1
    status, body = await g22.send(signed_earlier)
    assert (status, body["error"]) == (403, "signer_not_trusted") and "revoked" in body["message"]
    a01_sign = active(config, A01, Role.SIGN)
    assert (await certs(home, "revoke", a01_sign.serial, "--reason", "rotation drill")).code == 0
    status, receipts = await g22.call("GET", f"/v1/edocs/{doc_id}/receipts")
    assert [(r["code"], r["signature_valid"]) for r in receipts["recipients"][0]["receipts"]] == [
        ("01", True),
        ("03", True),
    ]
    trace = [e for e in await node.store.events(doc_id) if e.kind == "signer_revoked"]
    assert (
        len(trace) == 1
        and trace[0].detail["serial"] == sign.serial
        and trace[0].detail["reason"] == "key compromised"
    )
    events = await node.store.events_where(kind_prefix="cert_revoked")
    assert [(e.detail["serial"], e.detail["by"]) for e in events][:2] == [
        (tls.serial, "officer.b"),
        (sign.serial, "officer.b"),
    ]
    assert all(e.detail["fingerprint"] and e.document is None for e in events)
    logged = (await certs(home, "log", "--agency", G22, "--json")).json()["events"]
    officers = [e["event"] for e in logged if e["detail"]["by"] != "gateway init"]  # init's: at start
    assert officers == ["cert_revoked", "cert_issued", "cert_revoked"]


async def test_revoking_an_adapter_key_replaces_it_and_documents_keep_flowing(
    node: Node, config: Config, home: Path, agency: Callable[[str | None], Any]
) -> None:
    seal = active(config, GOV_ADAPTER, Role.SIGN)
    ran = await certs(home, "revoke", seal.serial, "--reason", "HSM swap", "--json")
    assert ran.code == 0, ran.err
    assert [e["event"] for e in ran.json()["events"]] == ["cert_rotated", "cert_revoked"]
    replacement = active(config, GOV_ADAPTER, Role.SIGN)
    assert replacement.predecessor == seal.serial
    await wait_for(lambda: node._cert_generation == node.trust.generation())
    status, body = await agency(G22).send(package(config, G22, [H41], "after-adapter-revocation"))
    assert status == 202
    assert {d.state for d in await wait_delivered(node, body["id"])} == {DeliveryState.DELIVERED}
    status, sealed = await agency(H41).call("GET", f"/v1/edocs/{body['id']}")
    assert seal_fingerprint(config, sealed, Network.GOVERNMENT) == replacement.fingerprint


async def test_after_the_overlap_the_old_tls_certificate_is_refused_and_old_keys_still_decrypt(
    node: Node, config: Config, home: Path, agency: Callable[[str | None], Any]
) -> None:
    old_session = agency(A01)
    status, body = await post(
        agency(G22), package(config, G22, [A01], "to-old-key", Classification.MAT), Classification.MAT
    )
    assert status == 202, body
    await wait_delivered(node, body["id"])
    ran = await certs(home, "rotate", "--agency", A01, "--overlap", "0")
    assert ran.code == 0, ran.err
    status, refused = await old_session.call("GET", "/v1/inbox")
    assert (status, refused["error"]) == (401, "unauthenticated") and "retired on" in refused["message"]
    status, sealed = await agency(A01).call("GET", f"/v1/edocs/{body['id']}")
    assert status == 200
    keys = decryption_keys(config.certs, A01)  # the current key, then the retired one it kept
    opened = open_delivery(
        sealed, trust=trust_for(config), network=Network.PARTY, at=datetime.now(UTC), decryption_keys=keys
    )
    assert opened.content.sender == G22
    with pytest.raises(Exception, match="not encrypted for any encryption key"):
        open_delivery(
            sealed,
            trust=trust_for(config),
            network=Network.PARTY,
            at=datetime.now(UTC),
            decryption_keys=keys[:1],
        )


async def test_server_tls_certificate_rotates_on_the_live_listener(
    node: Node, config: Config, home: Path
) -> None:
    async def served() -> str:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", node.port, ssl=client_context(config, A01), server_hostname="localhost"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
        return fingerprint(x509.load_der_x509_certificate(der))

    assert await served() == active(config, "gateway", Role.TLS).fingerprint
    assert (await certs(home, "rotate", "--agency", "gateway", "--overlap", "1")).code == 0
    new = active(config, "gateway", Role.TLS).fingerprint
    await wait_for(lambda: node._cert_generation == node.trust.generation())
    assert await served() == new
    cert, _, _ = load_key_pair(*server_paths(config.certs))
    assert fingerprint(cert) == new


@pytest.mark.slow
async def test_carrier_processes_pick_up_a_rotated_seal_key(home: Path, agency: Any) -> None:
    set_setting(home, "carriers", "1")
    config = load_config(home)
    node = Node(config)
    await node.start(port=0)
    try:
        ctx = client_context(config, G22)
        async with contract_session(ctx) as g22:

            async def send(number: str) -> str:
                async with g22.post(
                    f"https://localhost:{node.port}/v1/edocs", data=package(config, G22, [H41], number)
                ) as r:
                    assert r.status == 202
                    doc_id: str = (await r.json())["id"]
                await wait_delivered(node, doc_id, timeout=60)
                return doc_id

            first = await send("process-1")
            assert (await certs(home, "rotate", "--agency", GOV_ADAPTER, "--role", "sign")).code == 0
            await node.reload_certificates()
            second = await send("process-2")
        new = active(config, GOV_ADAPTER, Role.SIGN).fingerprint
        fingerprints = [
            seal_fingerprint(
                config, await node.store.sealed_for(d, Network.GOVERNMENT) or b"", Network.GOVERNMENT
            )
            for d in (first, second)
        ]
        assert fingerprints[0] != new and fingerprints[1] == new
    finally:
        await node.stop()


# --- refusals ---------------------------------------------------------------------------------------


async def test_expired_and_not_yet_valid_certificates_are_refused(
    node: Node, config: Config, tmp_path: Path, agency: Callable[[str | None], Any]
) -> None:
    now = datetime.now(UTC)
    windows = {
        "expired": (now - timedelta(days=3), now - timedelta(days=1)),
        "early": (now + timedelta(days=1), now + timedelta(days=9)),
    }
    for label, (start, end) in windows.items():
        tls, tls_key = leaf(config, G22, Role.TLS, network=Network.GOVERNMENT)
        tls = revalidated(config, tls, Network.GOVERNMENT, start, end)
        held = holder(tmp_path / label, G22, Role.TLS, tls, tls_key, Network.GOVERNMENT, config)
        status = await refused_or_status(tls_client(config, *agency_paths(held, G22, Role.TLS)), node.port)
        assert status in (0, 401), (label, status)  # refused in the handshake (or, failing that, by the API)

        sign, sign_key = leaf(config, G22, Role.SIGN, network=Network.GOVERNMENT)
        sign = revalidated(config, sign, Network.GOVERNMENT, start, end)
        forged = sign_package(
            holder(tmp_path / label, G22, Role.SIGN, sign, sign_key, Network.GOVERNMENT, config),
            G22,
            edoc(G22, [A01], label),
        )
        status, body = await agency(G22).send(forged)
        assert (status, body["error"]) == (403, "signer_not_trusted"), body
        assert ("expired on" if label == "expired" else "not valid before") in body["message"]


async def test_a_certificate_of_the_wrong_role_is_refused(
    node: Node, config: Config, tmp_path: Path, agency: Callable[[str | None], Any]
) -> None:
    for role in (Role.TLS, Role.ENCRYPT):
        # G22's own genuine TLS or encryption pair, used to sign a document.
        cert, key, _ = load_key_pair(*agency_paths(config.certs, G22, role))
        held = holder(tmp_path / role.value, G22, Role.SIGN, cert, key, Network.GOVERNMENT, config)
        status, body = await agency(G22).send(sign_package(held, G22, edoc(G22, [A01], f"role-{role.value}")))
        assert (status, body["error"]) == (403, "signer_not_trusted"), body
        assert f"issued for role '{role.value}', not 'sign'" in body["message"]
    # A signing certificate presented for TLS.
    cert, key, _ = load_key_pair(*agency_paths(config.certs, G22, Role.SIGN))
    held = holder(tmp_path / "tls-from-sign", G22, Role.TLS, cert, key, Network.GOVERNMENT, config)
    assert await refused_or_status(tls_client(config, *agency_paths(held, G22, Role.TLS)), node.port) in (
        0,
        401,
    )


async def test_a_certificate_from_another_networks_ca_is_refused(
    node: Node, config: Config, tmp_path: Path, agency: Callable[[str | None], Any]
) -> None:
    # G22 is a government agency; these chain to the party network's intermediate.
    sign, sign_key = leaf(config, G22, Role.SIGN, network=Network.PARTY)
    held = holder(tmp_path / "sign", G22, Role.SIGN, sign, sign_key, Network.PARTY, config)
    status, body = await agency(G22).send(sign_package(held, G22, edoc(G22, [A01], "cross")))
    assert (status, body["error"]) == (403, "signer_not_trusted")
    assert "party network CA, but the agency belongs to the government network" in body["message"]
    tls, tls_key = leaf(config, G22, Role.TLS, network=Network.PARTY)
    held = holder(tmp_path / "tls", G22, Role.TLS, tls, tls_key, Network.PARTY, config)
    assert await refused_or_status(tls_client(config, *agency_paths(held, G22, Role.TLS)), node.port) == 401


# --- checks and expiry warnings ---------------------------------------------------------------------


def test_certs_check_exit_codes(home: Path, config: Config) -> None:
    ok = certs_sync(home, "check")
    assert ok.code == 0 and "valid beyond 30 days" in ok.out, ok.out + ok.err
    assert certs_sync(home, "rotate", "--agency", H41, "--role", "sign", "--days", "10").code == 0
    serial = active(config, H41, Role.SIGN).serial
    warned = certs_sync(home, "check")
    assert warned.code == 1 and f"EXPIRING      {H41} sign certificate {serial} expires on" in warned.out
    assert certs_sync(home, "check", "--within", "5").code == 0
    listed = certs_sync(home, "list", "--expiring-within", "11", "--json").json()["certificates"]
    assert [(c["owner"], c["role"]) for c in listed] == [(H41, "sign")]

    # A certificate that chains to another PKI (its CA re-created elsewhere) is named as broken.
    other_root_key, other_ca_key, leaf_key = (generate_key(KeyType.P256) for _ in range(3))
    now = datetime.now(UTC)
    root = make_root_ca(other_root_key, "Other root", now, 30)
    ca = make_intermediate_ca(other_ca_key, Network.GOVERNMENT, root, other_root_key, now, 30)
    stranger = make_leaf(leaf_key.public_key(), code=G22, name="x", network=Network.GOVERNMENT,
                         role=Role.ENCRYPT, issuer_cert=ca, issuer_key=other_ca_key, now=now,
                         days=20)  # fmt: skip
    crt, key = agency_paths(config.certs, G22, Role.ENCRYPT)
    write_atomic(key, key_pem(leaf_key), 0o600, private_dir=True)
    write_atomic(crt, cert_pem(stranger) + cert_pem(ca), 0o644, private_dir=True)
    broken = certs_sync(home, "check", "--json")
    assert broken.code == 1
    kinds = {(p["problem"], p["code"], p["role"]) for p in broken.json()["problems"]}
    assert ("chain_broken", G22, "encrypt") in kinds and ("expiring", H41, "sign") in kinds
    assert DOCUMENT_SIGNING  # (the signing EKU the role check relies on is the RFC 9336 one)


async def test_serve_warns_at_start_and_logs_expiry_once(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await certs(home, "rotate", "--agency", I01, "--role", "tls", "--days", "7")).code == 0
    config = load_config(home)
    serial = active(config, I01, Role.TLS).serial
    caplog.set_level(logging.WARNING, logger="gateway.pki.problems")
    node = Node(config)
    await node.start(port=0)
    try:

        async def logged() -> list[Any]:
            return await node.store.events_where(kind_prefix="cert_expiring")

        for _ in range(200):
            if await logged():
                break
            await asyncio.sleep(0.05)
        assert [e.detail["serial"] for e in await logged()] == [serial]
        assert any(serial in r.getMessage() and "expiring" in r.getMessage() for r in caplog.records)
        await node.certificates.check_once()  # the daily check: warns again, logs nothing twice
        assert len(await logged()) == 1
        assert (await certs(home, "check")).code == 1 and len(await logged()) == 1
    finally:
        await node.stop()


def test_operator_certificates_are_issued_listed_logged_and_can_be_revoked(
    home: Path, config: Config
) -> None:
    issued = certs_sync(home, "issue", "--operator", "ops-1", "--by", "officer-7", "--json")
    assert issued.code == 0, issued.err
    files = config.certs / "operators" / "ops-1"
    assert (files / "tls.key").stat().st_mode & 0o777 == 0o600 and (
        files / "tls.p12"
    ).stat().st_mode & 0o777 == 0o600
    listed = certs_sync(home, "list", "--agency", "OPERATOR.ops-1", "--json").json()["certificates"]
    assert [(c["owner"], c["kind"], c["role"], c["state"]) for c in listed] == [
        ("OPERATOR.ops-1", "operator", "tls", "active")
    ]
    assert listed[0]["serial"] == issued.json()["certificates"][-1]["serial"]
    logged = certs_sync(home, "log", "--agency", "OPERATOR.ops-1", "--json").json()["events"]
    assert [(e["event"], e["detail"]["by"], e["detail"]["serial"]) for e in logged] == [
        ("cert_issued", "officer-7", listed[0]["serial"])
    ]
    again = certs_sync(home, "issue", "--operator", "ops-1")
    assert again.code == 1 and "already has a certificate" in again.err
    trust = trust_for(config)
    der = x509.load_pem_x509_certificates((files / "tls.crt").read_bytes())[0].public_bytes(Encoding.DER)
    assert trust.client(der, at=datetime.now(UTC)).code == "OPERATOR.ops-1"
    assert certs_sync(home, "revoke", listed[0]["serial"], "--reason", "left the team").code == 0
    with pytest.raises(Unauthenticated, match="revoked on"):
        trust.client(der, at=datetime.now(UTC))


def test_the_command_lines_choices_are_the_pkis_roles_and_key_types() -> None:
    from gateway.cli import certs_args as certs_cli

    assert set(certs_cli.ROLE_CHOICES) == {Role.TLS.value, Role.SIGN.value, Role.ENCRYPT.value}
    assert set(certs_cli.KEY_CHOICES) == {k.value for k in KeyType}
