"""The agency commands: ``agencies``, ``send``, ``inbox``, ``fetch``, ``status``, ``recall``,
``receipts``.

They act as an agency's own system would, through the mTLS API. Parsing and error reporting
live in ``gateway.cli.entry``."""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.agency_side.client import AgencyClient
from gateway.agency_side.packages import arrival_receipt, decryption_keys, open_delivery, sign_package
from gateway.cli.output import LOCAL_TZ, default_document_id, is_signed, local_time, print_json
from gateway.crypto.pki import Role
from gateway.domain.agencies import AgencyCode, Registry
from gateway.domain.edxml import (
    Attachment,
    Business,
    BusinessDocType,
    DocumentRef,
    NewEdoc,
    Organ,
    Replacement,
    build_edoc,
    build_status,
)
from gateway.domain.vocabulary import Classification, Priority, StatusCode
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import BadRequest, ConfigError, GatewayError, NotFound
from gateway.exchange.mailbox import STATUS_MEANING
from gateway.http.api import agency_view
from gateway.infra.files.pki_dir import agency_paths
from gateway.runtime import wiring
from gateway.runtime.config import Config


def _registry(config: Config) -> Registry:
    return wiring.registry(config)


def agencies(config: Config, args: argparse.Namespace) -> int:
    registry = _registry(config)
    if args.action == "show":
        code = AgencyCode.parse(args.code).value
        agency = registry.get(code)
        if agency is None:
            raise NotFound(f"no agency with code {code} in {config.registry}")
        view = agency_view(agency)
        view["children"] = [a.code for a in registry.children(code)]
        if args.json:
            print_json(view)
        else:
            for key, value in view.items():
                shown = ", ".join(value) if isinstance(value, list) else value
                print(f"{key:>11}: {shown or '-'}")  # JSON's null and [] are "-" to a person
        return 0
    rows = [a for a in registry if args.network is None or a.network.value == args.network]
    if args.json:
        print_json([agency_view(a) for a in rows])
        return 0
    for a in rows:
        state = a.state if a.state == "active" else f"retired → {a.successor or '-'}"
        print(f"{a.code:<15} {a.network.value:<10} {a.clearance.slug:<9} {state:<22} {a.name}")
    return 0


def _client(config: Config, code: str) -> AgencyClient:
    crt, key = agency_paths(config.certs, code, Role.TLS)
    if not crt.exists():
        raise ConfigError(
            f"no dev TLS certificate for agency {code} in {config.certs}; is it in the registry?"
        )
    return AgencyClient(config.url, cert_chain=crt, key=key, trust=config.certs / "trust.pem")


def send(config: Config, args: argparse.Namespace) -> int:
    code = AgencyCode.parse(args.agency).value
    level = Classification.from_slug(args.classification) if args.classification else Classification.NONE
    changed = args.updates or args.replaces
    if args.file:
        if args.to or args.subject or changed:
            raise BadRequest("give either FILE.xml or --to/--subject (and --updates/--replaces), not both")
        raw = Path(args.file).read_bytes()
        root = parse_xml(raw)
        package = raw if is_signed(root) else sign_package(config.certs, code, root)
    else:
        # An update or replacement names the original by its DocumentId; the gateway delivers
        # it to the original's recipients whatever --to says, so they are the default here too.
        original = _client(config, code).get_json(f"/v1/edocs/{changed}/receipts") if changed else None
        to = args.to or ([r["recipient"] for r in original["recipients"]] if original else [])
        if not to or not args.subject:
            raise BadRequest(
                "to build a document give --to CODE (one or more) and --subject TEXT, or a FILE.xml"
            )
        now = datetime.now(UTC)
        registry = _registry(config)
        sender = registry.get(code)
        recipients = [AgencyCode.parse(t).value for t in to]
        doc = NewEdoc(
            sender=Organ(code, sender.name if sender else ""),
            recipients=[Organ(r, (registry.get(r).name if registry.get(r) else "")) for r in recipients],  # type: ignore[union-attr]
            document_id=args.document_id or default_document_id(code, now.astimezone(LOCAL_TZ)),
            subject=args.subject,
            content=args.content,
            priority=Priority(args.priority),
            classification=level,
            attachments=[_attachment(Path(f)) for f in args.attach],
            **_change(original, recipients, replaces=bool(args.replaces), reason=args.reason),
        )
        package = sign_package(config.certs, code, build_edoc(doc, now=now.astimezone(LOCAL_TZ)))
    reply = _client(config, code).post_xml("/v1/edocs", package, classification=level)
    if args.json:
        print_json(reply)
        return 0
    print(reply["id"] + ("  (already accepted earlier: same id)" if reply.get("duplicate") else ""))
    for r in reply["recipients"]:
        via = (
            f"  (addressed to {r['addressed']}, retired; forwarded to its successor)"
            if r["forwarded_via"]
            else ""
        )
        print(f"  → {r['code']} [{r['network']}]{via}")
    return 0


def _chain(d: dict[str, Any]) -> str:
    """Where a document stands among updates and replacements, for one line of output."""
    parts = [
        f"  [{label} {d[key]}]"
        for key, label in (
            ("updates", "updates"),
            ("replaces", "replaces"),
            ("superseded_by", "superseded by"),
        )
        if d.get(key)
    ]
    return "".join(parts)


def _change(
    original: dict[str, Any] | None, recipients: list[str], *, replaces: bool, reason: str | None
) -> dict[str, Any]:
    """``NewEdoc``'s ResponseFor and Bussiness for an update or replacement of ``original``."""
    if original is None:
        return {}
    kind = BusinessDocType.REPLACE if replaces else BusinessDocType.UPDATE
    named = (Replacement(original["document_id"], tuple(recipients)),) if replaces else ()
    return {
        "response_for": DocumentRef(organ=original["from"], document_id=original["document_id"]),
        "business": Business(doc_type=kind, reason=reason, replacements=named),
    }


def _attachment(path: Path) -> Attachment:
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Attachment(path.name, content_type, path.read_bytes())


def inbox(config: Config, args: argparse.Namespace) -> int:
    code = AgencyCode.parse(args.agency).value
    reply = _client(config, code).get_json("/v1/inbox" + ("?all=1" if args.all else ""))
    if args.json:
        print_json(reply)
        return 0
    if not reply["documents"]:
        print(f"inbox of {code} is empty")
    for d in reply["documents"]:
        what = d["subject"] if d["kind"] == "edoc" else f"status {d['status_code']} for {d['response_for']}"
        if d["subject"] is None and d["kind"] == "edoc":
            what = f"[{d['classification']}]"
        if d.get("recalled"):
            what += "  [recalled]"
        what += _chain(d)
        print(f"{d['id']}  P{d['priority']}  {local_time(d['accepted_at'])}  from {d['from']:<14} {what}")
    return 0


def fetch(config: Config, args: argparse.Namespace) -> int:
    """Fetch as the recipient's system would: verify its network's seal, decrypt a classified
    package with this agency's keys, verify the sender's signature, then (classified) send the
    agency's own signed 01 receipt. A failure is reported to the gateway's trace and nothing is written."""
    code = AgencyCode.parse(args.agency).value
    client = _client(config, code)
    sealed = client.request("GET", f"/v1/edocs/{args.id}").body
    registry = _registry(config)
    agency = registry.get(code)
    if agency is None:
        raise ConfigError(f"agency {code} is not in {config.registry}")
    trust = wiring.trust(config, registry)
    now = datetime.now(UTC)
    try:
        opened = open_delivery(
            sealed,
            trust=trust,
            network=agency.network,
            at=now,
            decryption_keys=decryption_keys(config.certs, code),
        )
    except GatewayError as exc:
        body = json.dumps({"stage": "open", "reason": exc.message}).encode()
        with contextlib.suppress(GatewayError):
            client.request("POST", f"/v1/edocs/{args.id}/failures", body, "application/json")
        raise
    classified = opened.transfer.routing.classification is not Classification.NONE
    if args.output:
        Path(args.output).write_bytes(opened.package)
        if classified:
            os.chmod(args.output, 0o600)  # plaintext of a classified document: owner only
        hops = " → ".join(f"{h.network}:{h.action}" for h in opened.transfer.hops)
        print(
            f"saved {args.output}: signed by {opened.signer.code}, seal of the {agency.network} adapter "
            f"verified; hops {hops}"
        )
    else:
        sys.stdout.buffer.write(opened.package)
    if classified and opened.transfer.routing.kind == "edoc":
        receipt = arrival_receipt(config.certs, code, opened, sealed, now=now)
        client.post_xml(f"/v1/edocs/{args.id}/status", receipt)
        if args.output:
            print(f"signed 01 receipt sent to {opened.content.sender}")
    return 0


def status(config: Config, args: argparse.Namespace) -> int:
    code = AgencyCode.parse(args.agency).value
    try:
        status_code = StatusCode(args.code)
    except ValueError:
        known = ", ".join(c.value for c in StatusCode)
        raise BadRequest(f"unknown status code {args.code!r}; use one of {known}") from None
    return _send_status(config, code, args.id, status_code, args.note)


def recall(config: Config, args: argparse.Namespace) -> int:
    """The sender asks every recipient to give a document back: a signed 13 with the reason."""
    code = AgencyCode.parse(args.agency).value
    return _send_status(config, code, args.id, StatusCode.RECALL_REQUESTED, args.reason)


def _send_status(config: Config, code: str, doc_id: str, status_code: StatusCode, note: str | None) -> int:
    client = _client(config, code)
    about = client.get_json(f"/v1/edocs/{doc_id}/receipts")
    # ResponseFor/OrganId names the original's sender; the gateway carries a 13 so addressed to
    # every recipient of the original, and any other status to that sender.
    root = build_status(
        sender=Organ(code),
        about_organ=about["from"],
        about_document_id=about["document_id"],
        code=status_code,
        now=datetime.now(LOCAL_TZ),
        description=note,
    )
    reply = client.post_xml(f"/v1/edocs/{doc_id}/status", sign_package(config.certs, code, root))
    print(
        f"{reply['id']}  status {status_code.value} ({STATUS_MEANING[status_code.value]}) sent to "
        + ", ".join(r["code"] for r in reply["recipients"])
    )
    return 0


def receipts(config: Config, args: argparse.Namespace) -> int:
    code = AgencyCode.parse(args.agency).value
    reply = _client(config, code).get_json(f"/v1/edocs/{args.id}/receipts")
    if args.json:
        print_json(reply)
        return 0
    print(f"{reply['id']}  {reply['document_id']}  from {reply['from']}{_chain(reply)}")
    for r in reply["recipients"]:
        via = (
            f" (addressed to {r['addressed']}, forwarded via {' → '.join(r['forwarded_via'])})"
            if r["forwarded_via"]
            else ""
        )
        recall_part = f"  recall {r['recall']}" if r.get("recall") else ""
        change_part = f"  change {r['change']}" if r.get("change") else ""
        print(f"  {r['recipient']} [{r['network']}] {r['state']}{via}{recall_part}{change_part}")
        for s in r["receipts"]:
            ok = "signature ok" if s["signature_valid"] else f"SIGNATURE INVALID: {s.get('problem', '')}"
            when = local_time(s["at"])
            print(f"      {s['code']} {s['meaning']:<24} {when}  signed by {s['signed_by']}, {ok}")
    if reply["unconfirmed"]:
        print("  not yet confirmed (no 01): " + ", ".join(reply["unconfirmed"]))
    return 0
