"""What ``gateway certs …`` does (``gateway.cli.certs_args`` parses it; this module is imported only when
one of them runs: it pulls in the certificate office and the store).

``gateway certs …``: what a security officer types to issue, rotate, revoke and check certificates.

Runs as the local operator with direct access to the home directory, like ``gateway trace``;
every change is written to the certificate inventory (which a running gateway watches: no
restart) and to the delivery log, with the operator's name (``--by``, default ``$USER``).
``register``/``run`` plug into ``gateway.cli.entry``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.cli.output import table
from gateway.crypto.pki import KeyType, Role, fingerprint
from gateway.domain.clock import shown
from gateway.errors import BadRequest, ConfigError, GatewayError, StoreError
from gateway.exchange.ports import EventRecord, NewEvent
from gateway.infra.files.dev_ca import CertOffice, Change
from gateway.infra.files.pki_dir import read_inventory
from gateway.infra.files.pki_init import LEAF_DAYS
from gateway.infra.sql.store import SqlStore
from gateway.pki.events import signer_revoked_events
from gateway.pki.inventory import (
    OPERATOR_DAYS,
    OPERATOR_PREFIX,
    CertRecord,
    OwnerKind,
    iso,
    normalise_serial,
)
from gateway.pki.problems import log_expiry, log_found
from gateway.runtime import wiring
from gateway.runtime.config import Config

if TYPE_CHECKING:
    from gateway.http.console import OperatorCredentials

EXIT_OK, EXIT_ATTENTION = 0, 1
T = TypeVar("T")


def run(config: Config, args: argparse.Namespace) -> int:
    """Run one ``certs`` command; errors are ``GatewayError`` (one line, said by the caller)."""
    if not config.certs.is_dir():
        raise ConfigError(f"no certificates in {config.certs}; run `gateway init` first")
    handler = {
        "list": _list,
        "issue": _issue,
        "rotate": _rotate,
        "revoke": _revoke,
        "check": _check,
        "export-ca": _export_ca,
        "log": _log,
    }[args.certs_action]
    return handler(config, args)


# --- commands -----------------------------------------------------------------------------------


def _list(config: Config, args: argparse.Namespace) -> int:
    office = _office(config, "gateway certs list")
    now = office.now
    roles = list(Role)
    records = sorted(office.inventory(), key=lambda r: (r.owner, roles.index(r.role), r.issued_at))
    if args.agency:
        code = _owner_code(args.agency)
        records = [r for r in records if r.owner == code]
    if args.expiring_within is not None:
        until = now + timedelta(days=_number(args.expiring_within, "--expiring-within", 0, 36_500))
        in_use = {"active", "next", "retiring"}
        records = [r for r in records if r.state(now).value in in_use and r.not_after <= until]
    if args.json:
        _print_json({"at": iso(now), "certificates": [r.view(now) for r in records]})
        return EXIT_OK
    if not records:
        filtered = args.agency or args.expiring_within is not None
        print(
            "no certificates match; `gateway certs list` without options lists them all"
            if filtered
            else "no certificates in the inventory; `gateway init` creates the dev PKI"
        )
        return EXIT_OK
    header = ("OWNER", "ROLE", "STATE", "SERIAL", "KEY", "VALID FROM", "VALID UNTIL", "FINGERPRINT")
    rows = [
        (r.owner, r.role.value, r.state(now).value, r.serial[:16], r.key_type,
         _local(r.not_before), _local(r.not_after), r.fingerprint[:16])
        for r in records
    ]  # fmt: skip
    print("\n".join(table(header, rows)))
    return EXIT_OK


def _issue(config: Config, args: argparse.Namespace) -> int:
    default = OPERATOR_DAYS if args.operator is not None else LEAF_DAYS
    days = int(_number(args.days, "--days", 1, 3650)) if args.days is not None else default
    if args.operator is not None:
        return _issue_operator(config, args, days)
    if args.role is None:
        raise BadRequest("--role tls|sign|encrypt is required with --agency")
    office = _office(config, _operator(args))
    change = office.issue(args.agency, Role(args.role), key_type=KeyType(args.key), days=days)
    _record(config, change)
    issued = change.records[-1]
    if args.json:
        return _print_change(change, office.now)
    state = issued.state(office.now).value
    print(
        f"issued {issued.owner} {issued.role.value} certificate {issued.serial} ({state}), {issued.key_type}"
    )
    print(
        f"  valid {_local(issued.not_before)} → {_local(issued.not_after)}, fingerprint {issued.fingerprint}"
    )
    print(f"  {config.certs / issued.crt}  and its key (SECRET)  {config.certs / issued.key}")
    if state == "next":
        print(f"  to make it active: gateway certs rotate --agency {issued.owner} --role {issued.role.value}")
    return EXIT_OK


def _issue_operator(config: Config, args: argparse.Namespace, days: int) -> int:
    if args.role not in (None, Role.TLS.value):
        raise BadRequest("an operator holds only a tls certificate (the console and /metrics)")
    files, change = issue_operator(
        config, args.operator, days=days, key_type=KeyType(args.key), by=_operator(args)
    )
    if args.json:
        return _print_change(change, datetime.now(UTC), pkcs12_password=files.pkcs12_password)
    record = change.records[-1]
    print(f"issued {record.owner} tls certificate {record.serial} (active), {record.key_type}")
    print(f"  valid {_local(record.not_before)} → {_local(record.not_after)} ({days} days)")
    print(f"  {files.certificate}\n  {files.key}  (SECRET, 0600)")
    print(f"  {files.pkcs12}  (for a browser; SECRET, 0600), password: {files.pkcs12_password}")
    print(f"open {config.url}/console with it; trust {config.certs / 'trust.pem'} for the server")
    return EXIT_OK


def issue_operator(
    config: Config, name: str, *, days: int, key_type: KeyType, by: str
) -> tuple[OperatorCredentials, Change]:
    """Write an operator's certificate, record it in the inventory as issued by ``by`` and log
    ``cert_issued``: ``gateway certs issue --operator`` and ``gateway operator issue`` both."""
    from gateway.http.console import issue_operator as write_operator_files  # aiohttp: only when needed

    try:
        files = write_operator_files(config.certs, name, now=datetime.now(UTC), days=days, key_type=key_type)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    change = _office(config, by).adopt(OPERATOR_PREFIX + name)
    _record(config, change)
    return files, change


def _rotate(config: Config, args: argparse.Namespace) -> int:
    overlap = timedelta(hours=_number(args.overlap, "--overlap", 0, 24 * 90))
    days = int(_number(args.days, "--days", 1, 3650)) if args.days is not None else None
    office = _office(config, _operator(args))
    roles = [Role(r) for r in dict.fromkeys(args.role or [])]
    key_type = KeyType(args.key) if args.key else None
    change = office.rotate(args.agency, roles, overlap=overlap, key_type=key_type, days=days)
    _record(config, change)
    if args.json:
        return _print_change(change, office.now)
    for e in change.events:
        if e.kind != "cert_rotated":
            continue
        d = e.detail
        print(
            f"rotated {d['code']} {d['role']}: {d['serial']} is active for new work; "
            f"{d['predecessor']} stays valid until {_local_iso(d['overlap_until'])}, then retires "
            f"(kept under retired/)"
        )
    return EXIT_OK


def _revoke(config: Config, args: argparse.Namespace) -> int:
    normalise_serial(args.serial)  # refuse a malformed serial before anything else
    reason = _line(args.reason, "--reason", 200)
    office = _office(config, _operator(args))
    change = office.revoke(args.serial, reason)
    revoked = change.records[-1]
    marked = _record(config, change, revoked=revoked)
    if args.json:
        return _print_change(change, office.now, documents_marked=marked)
    print(
        f"revoked {revoked.owner} {revoked.role.value} certificate {revoked.serial} at {_local(office.now)}"
    )
    for e in change.events:
        if e.kind == "cert_rotated":
            print(f"  replaced at once by {e.detail['serial']} (the gateway keeps working with it)")
    if revoked.role is Role.SIGN and marked:
        print(f"  {marked} documents it signed before now keep verifying; their traces record the revocation")
    if revoked.kind is OwnerKind.AGENCY and not any(e.kind == "cert_rotated" for e in change.events):
        print(
            f"  issue a replacement: gateway certs issue --agency {revoked.owner} --role {revoked.role.value}"
        )
    return EXIT_OK


def _check(config: Config, args: argparse.Namespace) -> int:
    within = timedelta(days=_number(args.within, "--within", 0, 36_500))
    office = _office(config, _operator(args))
    problems = office.inspect(within=within)
    _store_run(config, lambda store: log_expiry(problems, store, at=office.now, by=office.by))
    if args.json:
        _print_json(
            {"ok": not problems, "within_days": within.days, "problems": [p.view() for p in problems]}
        )
    else:
        for p in problems:
            print(f"{p.kind.upper():<13} {p.message}")
        if problems:
            print(f"{len(problems)} certificate problem(s) need a security officer")
        else:
            print(f"all certificates in use are valid beyond {within.days} days and chain to this PKI")
    return EXIT_ATTENTION if problems else EXIT_OK


def _export_ca(config: Config, args: argparse.Namespace) -> int:
    office = _office(config, "gateway certs export-ca")
    pem, certificates = office.trust_bundle()
    if args.output:
        Path(args.output).write_bytes(pem)
    if args.json:
        views = [
            {
                "subject": c.subject.rfc4514_string(),
                "fingerprint": fingerprint(c),
                "not_after": iso(c.not_valid_after_utc),
            }
            for c in certificates
        ]
        _print_json({"pem": pem.decode("ascii"), "certificates": views})
    elif args.output:
        print(f"wrote {len(certificates)} trust anchors to {args.output}")
    else:
        sys.stdout.write(pem.decode("ascii"))
    return EXIT_OK


def _log(config: Config, args: argparse.Namespace) -> int:
    detail = None
    if args.serial:
        detail = f'"serial": "{normalise_serial(args.serial)}'  # a prefix matches too
    elif args.agency:
        detail = f'"code": "{_owner_code(args.agency)}"'

    async def read(store: SqlStore) -> list[EventRecord]:
        # What `gateway init` issued is recorded by the first reader of the log (it ran before
        # there was one): an officer's first `certs log` shows it too.
        await log_found(read_inventory(config.certs), store, at=datetime.now(UTC))
        return await store.events_where(kind_prefix="cert_", detail_contains=detail)

    events = _store_run(config, read)
    if args.json:
        _print_json({"events": [_event_view(e) for e in events]})
        return EXIT_OK
    if not events:
        print("no certificate events")
        return EXIT_OK
    rows = []
    for e in events:
        d = e.detail
        extra = ", ".join(
            f"{k}={_local_iso(v) if k in _TIMES and isinstance(v, str) else v}"
            for k, v in d.items()
            if k not in {"code", "role", "serial", "fingerprint"}
        )
        rows.append((_local(e.at), e.kind, d.get("code", ""), d.get("role", ""), d.get("serial", ""), extra))
    print("\n".join(table(("TIME", "EVENT", "OWNER", "ROLE", "SERIAL", "DETAILS"), rows)))
    return EXIT_OK


# Detail fields that hold a UTC time (as stored): shown in Vietnam time like every other time.
_TIMES = frozenset({"not_after", "overlap_until", "revoked_at", "issued_at"})


# --- helpers ------------------------------------------------------------------------------------


def _office(config: Config, by: str) -> CertOffice:
    return wiring.cert_office(config, now=datetime.now(UTC), by=by)


def _record(config: Config, change: Change, *, revoked: CertRecord | None = None) -> int:
    """Write the change's events to the delivery log; for a revoked signing certificate also one
    ``signer_revoked`` event per document it signed. Returns how many documents were marked."""

    async def write(store: SqlStore) -> int:
        events: list[NewEvent] = list(change.events)
        marked: list[NewEvent] = []
        if revoked is not None and revoked.role is Role.SIGN:
            verified = await store.events_where(
                kind_prefix="verified", detail_contains=f'"fingerprint": "{revoked.fingerprint}"'
            )
            by = revoked.revocation.by if revoked.revocation else ""
            marked = signer_revoked_events(verified, revoked, at=events[-1].at, by=by)
        await store.add_events(events + marked)
        return len(marked)

    try:
        return _store_run(config, write)
    except GatewayError as exc:
        raise StoreError(
            f"the certificates were changed, but recording it in the delivery log failed: {exc.message}"
        ) from exc


def _store_run(config: Config, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    return wiring.with_store(config, work)


def _operator(args: argparse.Namespace) -> str:
    if args.by is not None:
        return _line(args.by, "--by", 64)
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:
        return "unknown operator"


def _line(text: str, option: str, limit: int) -> str:
    value = text.strip()
    if not value or len(value) > limit or not value.isprintable():
        raise BadRequest(f"{option} must be one line of 1 to {limit} printable characters")
    return value


def _number(text: str, option: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{option} must be a number, not {text!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{option} must be between {low:g} and {high:g}, not {text}")
    return value


def _owner_code(text: str) -> str:
    value = text.strip()
    if value.upper().startswith(OPERATOR_PREFIX):
        return OPERATOR_PREFIX + value[len(OPERATOR_PREFIX) :]  # operator names keep their case
    if value.upper().startswith(("ADAPTER.", "CA.", "ROOT.")):
        return value.upper()
    return value.lower() if value.lower() == "gateway" else value


def _print_change(change: Change, now: datetime, **extra: Any) -> int:
    _print_json(
        {
            "certificates": [r.view(now) for r in change.records],
            "events": [{"event": e.kind, "at": iso(e.at), **e.detail} for e in change.events],
            **extra,
        }
    )
    return EXIT_OK


def _event_view(e: EventRecord) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at.isoformat(), "event": e.kind, "network": e.network, "detail": e.detail}


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _local(t: datetime) -> str:
    return shown(t)


def _local_iso(text: str) -> str:
    return _local(datetime.fromisoformat(text.replace("Z", "+00:00")))
