"""The agency commands: ``agencies``, ``send``, ``inbox``, ``fetch``, ``status``, ``recall``,
``receipts``.

They act as an agency's own system would, through the mTLS API, with the very client an agency
system imports (``gateway.agency_side.client.AgencyClient``): one code path. Parsing and error
reporting live in ``gateway.cli.entry``."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import mimetypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from gateway.agency_side.client import AgencyClient, AgencyKeys, Delivery, Draft, InboxEntry, Receipts
from gateway.cli.output import ProgressBar, local_time, print_json
from gateway.domain.agencies import AgencyCode, Registry
from gateway.domain.edxml import Attachment, Edoc
from gateway.domain.edxml.attachments import content_key
from gateway.domain.vocabulary import Classification, Priority, StatusCode
from gateway.errors import BadRequest, CryptoError, GatewayUnreachable, NotFound, UsageError
from gateway.exchange.mailbox import STATUS_MEANING
from gateway.http.api import agency_view
from gateway.infra.files.atomic import write_atomic
from gateway.runtime import listening, wiring
from gateway.runtime.config import CONFIG_FILE, Config


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


def _address(config: Config, args: argparse.Namespace) -> tuple[str, str]:
    """The gateway's URL and where it came from: ``--url``, ``$GATEWAY_URL``, the record a running
    ``gateway serve`` keeps in this home, or the config's port."""
    config_file = Path(args.config) if getattr(args, "config", None) else None
    record = listening.record_path(config.home, config_file)
    for url, source in (
        (getattr(args, "url", None), "--url"),
        (os.environ.get("GATEWAY_URL"), "GATEWAY_URL"),
        (listening.recorded(record), f"{record}, where the running `gateway serve` recorded it"),
    ):
        if url:
            if not url.startswith("https://"):
                raise UsageError(f"{source} {url!r} is not an https:// URL; give https://HOST:PORT")
            return url, source
    return (
        config.url,
        f"the port in {config_file or config.home / CONFIG_FILE} (no `gateway serve` runs here)",
    )


@contextlib.contextmanager
def _client(config: Config, args: argparse.Namespace, code: str) -> Iterator[AgencyClient]:
    keys = AgencyKeys.from_dev_pki(config.certs, code, _registry(config))
    url, source = _address(config, args)
    # A bar on the terminal for long transfers; nothing extra under --json or without a tty.
    shown = sys.stderr.isatty() and not getattr(args, "json", False)
    client = AgencyClient(url, keys, progress=ProgressBar(sys.stderr) if shown else None)
    try:
        yield client
    except GatewayUnreachable as exc:
        raise GatewayUnreachable(
            f"{exc.message}; that address came from {source}; give another with --url"
        ) from None
    finally:
        client.close()


def send(config: Config, args: argparse.Namespace) -> int:
    code = AgencyCode.parse(args.agency).value
    level = Classification.from_slug(args.classification) if args.classification else Classification.NONE
    changed = args.updates or args.replaces
    with _client(config, args, code) as client:
        if args.file:
            if args.to or args.subject or changed or args.due:
                raise BadRequest(
                    "give either FILE.xml or --to/--subject (and --due, --updates/--replaces), not both"
                )
            accepted = client.send_package(Path(args.file).read_bytes(), classification=level)
        else:
            if not args.subject or not (args.to or changed):
                raise BadRequest(
                    "to build a document give --to CODE (one or more) and --subject TEXT, or a FILE.xml"
                )
            draft = Draft(
                subject=args.subject,
                to=args.to,
                content=args.content,
                priority=Priority(args.priority),
                classification=level,
                due=args.due,
                attachments=[_attachment(Path(f)) for f in args.attach],
                document_id=args.document_id,
            )
            # An update or replacement names the original by its DocumentId; the gateway delivers
            # it to the original's recipients whatever --to says, so they are the default here too.
            if args.updates:
                accepted = client.update(args.updates, draft, reason=args.reason)
            elif args.replaces:
                accepted = client.replace(args.replaces, draft, reason=args.reason)
            else:
                accepted = client.send(draft)
    if args.json:
        print_json(accepted.raw)
        return 0
    print(accepted.id + ("  (already accepted earlier: same id)" if accepted.duplicate else ""))
    for r in accepted.recipients:
        via = (
            f"  (addressed to {r.addressed}, retired; forwarded to its successor)" if r.forwarded_via else ""
        )
        print(f"  → {r.code} [{r.network}]{via}")
    return 0


def _chain(d: InboxEntry | Receipts) -> str:
    """Where a document stands among updates and replacements, for one line of output."""
    parts = [
        f"  [{label} {value}]"
        for value, label in (
            (d.updates, "updates"),
            (d.replaces, "replaces"),
            (d.superseded_by, "superseded by"),
        )
        if value
    ]
    return "".join(parts)


def _attachment(path: Path) -> Attachment:
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Attachment(path.name, content_type, path.read_bytes())


def inbox(config: Config, args: argparse.Namespace) -> int:
    code = AgencyCode.parse(args.agency).value
    with _client(config, args, code) as client:
        entries = client.inbox(include_fetched=args.all)
    if args.json:
        print_json({"agency": code, "documents": [e.raw for e in entries]})
        return 0
    if not entries:
        print(f"inbox of {code} is empty")
    for d in entries:
        if d.kind != "edoc":
            what = f"status {d.status_code} for {d.response_for}"
        else:  # a classified document's subject never reaches the gateway in clear
            what = d.subject if d.subject is not None else f"[{d.classification.slug}]"
        if d.recalled:
            what += "  [recalled]"
        what += _chain(d)
        print(
            f"{d.id}  P{int(d.priority)}  {local_time(d.accepted_at.isoformat())}  from {d.sender:<14} {what}"
        )
    return 0


def fetch(config: Config, args: argparse.Namespace) -> int:
    """Fetch as the recipient's system would: verify its network's seal, decrypt a classified
    package with this agency's keys, verify the sender's signature, then (classified) send the
    agency's own signed 01 receipt once the file is written. A failure is reported to the
    gateway's trace and nothing is written."""
    code = AgencyCode.parse(args.agency).value
    with _client(config, args, code) as client:
        delivery = client.fetch(args.id, acknowledge=False)
        classified = delivery.classification is not Classification.NONE
        if args.attachment is not None:
            _save_attachment(client, delivery, args.attachment, args.output, classified)
        elif args.output:
            # Only now, every check passed: a temp file beside it, fsync, rename (removed on failure),
            # owner-only from its creation when it is the plaintext of a classified document.
            write_atomic(Path(args.output), delivery.package, 0o600 if classified else None)
            hops = " → ".join(f"{h.network}:{h.action}" for h in delivery.hops)
            print(
                f"saved {args.output}: signed by {delivery.signed_by}, seal of the {client.keys.network} "
                f"adapter verified; hops {hops}"
            )
        else:
            sys.stdout.buffer.write(delivery.package)
        if classified and isinstance(delivery.content, Edoc):
            client.acknowledge(delivery)
            if args.output:
                print(f"signed 01 receipt sent to {delivery.content.sender}")
    return 0


def _save_attachment(
    client: AgencyClient, delivery: Delivery, content_id: str, output: str | None, classified: bool
) -> None:
    """Write one attachment, taken from the package whose signature was just verified (decrypted
    first when classified). For an unclassified document the gateway's own copy
    (``GET .../attachments/{cid}``) is fetched too and must be the same bytes: a gateway serving
    anything but the signed attachment is caught here, not by the reader of the file."""
    if output is None:
        raise UsageError("--attachment needs -o FILE (an attachment is not written to a terminal)")
    wanted = content_key(content_id)
    signed = next((a for a in delivery.attachments if a.content_id == wanted), None)
    if signed is None:
        known = ", ".join(a.content_id for a in delivery.attachments) or "none"
        raise NotFound(f"document {delivery.id} has no attachment {content_id!r}; its ContentIds: {known}")
    if not classified:
        served = client.attachment(delivery.id, content_id)
        if hashlib.sha256(served).digest() != hashlib.sha256(signed.data).digest():
            raise CryptoError(
                f"the gateway served attachment {content_id!r} with other bytes than the sender signed"
            )
    # Owner-only when it is the plaintext of a classified document; in place only when complete.
    write_atomic(Path(output), signed.data, 0o600 if classified else None)
    print(
        f"saved {output}: attachment {wanted} ({signed.content_type}, {len(signed.data)} bytes, "
        f"SHA-256 {hashlib.sha256(signed.data).hexdigest()}) of a package signed by {delivery.signed_by}"
    )


def status(config: Config, args: argparse.Namespace) -> int:
    code = AgencyCode.parse(args.agency).value
    try:
        status_code = StatusCode(args.code)
    except ValueError:
        known = ", ".join(c.value for c in StatusCode)
        raise BadRequest(f"unknown status code {args.code!r}; use one of {known}") from None
    return _send_status(config, args, code, status_code, args.note)


def recall(config: Config, args: argparse.Namespace) -> int:
    """The sender asks every recipient to give a document back: a signed 13 with the reason."""
    code = AgencyCode.parse(args.agency).value
    return _send_status(config, args, code, StatusCode.RECALL_REQUESTED, args.reason)


def _send_status(
    config: Config, args: argparse.Namespace, code: str, status_code: StatusCode, note: str | None
) -> int:
    with _client(config, args, code) as client:
        accepted = client.status(args.id, status_code, note)
    print(
        f"{accepted.id}  status {status_code.value} ({STATUS_MEANING[status_code.value]}) sent to "
        + ", ".join(r.code for r in accepted.recipients)
    )
    return 0


def receipts(config: Config, args: argparse.Namespace) -> int:
    code = AgencyCode.parse(args.agency).value
    with _client(config, args, code) as client:
        view = client.receipts(args.id)
    if args.json:
        print_json(view.raw)
        return 0
    print(f"{view.id}  {view.document_id}  from {view.sender}{_chain(view)}")
    for r in view.recipients:
        via = (
            f" (addressed to {r.addressed}, forwarded via {' → '.join(r.forwarded_via)})"
            if r.forwarded_via
            else ""
        )
        recall_part = f"  recall {r.recall}" if r.recall else ""
        change_part = f"  change {r.change}" if r.change else ""
        print(f"  {r.recipient} [{r.network}] {r.state}{via}{recall_part}{change_part}")
        for s in r.receipts:
            ok = "signature ok" if s.signature_valid else f"SIGNATURE INVALID: {s.problem or ''}"
            when = local_time(s.at.isoformat())
            print(f"      {s.code} {s.meaning:<24} {when}  signed by {s.signed_by}, {ok}")
    if view.unconfirmed:
        print("  not yet confirmed (no 01): " + ", ".join(view.unconfirmed))
    return 0
