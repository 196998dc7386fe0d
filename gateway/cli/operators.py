"""What ``gateway trace``, ``gateway audit`` and ``gateway operator`` do (``gateway.cli.operators_args``
parses them; this module is imported only when one of them runs: it pulls in the whole store).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.audit.export import export_lines, verify_export
from gateway.audit.heads import SignedHead, anchors_from_pem
from gateway.audit.log import GENESIS, AuditRecord
from gateway.audit.signer import HeadSigner
from gateway.audit.verify import AuditReport, verify_log
from gateway.crypto.pki import PrivateKey, TrustAnchors
from gateway.domain.agencies import AgencyCode
from gateway.domain.clock import SystemClock, shown
from gateway.domain.vocabulary import Network
from gateway.errors import AuditError, BadRequest, NotFound
from gateway.exchange.deadlines import WARN_BEFORE, at_risk_view, flag_kind
from gateway.infra.files.keys import load_seal_key
from gateway.infra.files.pki_dir import load_trust_anchors
from gateway.infra.sql.reads import SqlOversight
from gateway.operators.readmodel import Search
from gateway.operators.timeline import (
    build_timeline,
    local,
    parse_moment,
    render_text,
    summary_line,
    summary_view,
    timeline_view,
)
from gateway.runtime import wiring
from gateway.runtime.config import Config

EXIT_TAMPERED = 1
T = TypeVar("T")


def _with_store(config: Config, work: Callable[[SqlOversight], Awaitable[T]]) -> T:
    return wiring.with_oversight(config, work)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# --- trace --------------------------------------------------------------------------------------


def trace(config: Config, args: argparse.Namespace) -> int:
    if args.overdue:
        return _overdue(config, args)
    if args.id and args.agency:
        raise BadRequest("give a document id, or --agency CODE, not both")
    if args.agency:
        return _agency(config, args)
    if not args.id:
        raise BadRequest("give a document id, or --agency CODE to list an agency's documents")
    parts = _with_store(config, lambda o: o.trace_parts(args.id))
    if parts is None:
        raise NotFound(f"no document with id {args.id} in {config.database_url}")
    timeline = build_timeline(parts)
    if args.json:
        _print_json(timeline_view(timeline))
    else:
        print("\n".join(render_text(timeline)))
    return 0


def _agency(config: Config, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    code = AgencyCode.parse(args.agency).value
    since = parse_moment(args.since, now=now)
    until = parse_moment(args.until, now=now, end_of_day=True) if args.until else None
    if not 1 <= args.limit <= 10_000:
        raise BadRequest("--limit must be from 1 to 10000")
    search = Search(
        agency=code,
        since=since,
        until=until,
        states=frozenset({args.state} if args.state else ()),
        before=args.before,
        limit=args.limit,
    )
    found = _with_store(config, lambda o: o.search_documents(search))
    more = found[-1].document.id if len(found) == args.limit else None
    if args.json:
        documents = [summary_view(s, code) for s in found]
        _print_json({"agency": code, "since": since.isoformat(), "documents": documents, "next_before": more})
        return 0
    state = f", deliveries {args.state}" if args.state else ""
    print(
        f"{code}: {len(found)} document{'' if len(found) == 1 else 's'} since {local(since)} "
        f"(Asia/Ho_Chi_Minh){state}; → sent, ← received"
    )
    for s in found:
        print("  " + summary_line(s, code))
    if more:
        print(f"  … more: gateway trace --agency {code} --since {args.since} --before {more}")
    return 0


def _overdue(config: Config, args: argparse.Namespace) -> int:
    """``gateway trace --overdue``: whom to phone, soonest deadline first."""
    now = datetime.now(UTC)
    agency = AgencyCode.parse(args.agency).value if args.agency else None
    risks = [
        r
        for r in _with_store(config, lambda o: o.at_risk(until=now + WARN_BEFORE))
        if (args.id is None or r.document == args.id) and (agency is None or r.recipient == agency)
    ]
    if args.json:
        _print_json({"now": now.isoformat(), "deliveries": [at_risk_view(r, now) for r in risks]})
        return 0
    hours = f"{WARN_BEFORE.total_seconds() / 3600:g}"
    overdue = sum(1 for r in risks if flag_kind(r, now) == "overdue")
    print(
        f"{len(risks)} deliveries at risk at {local(now)} (Asia/Ho_Chi_Minh): {overdue} overdue, "
        f"{len(risks) - overdue} due within {hours} h"
    )
    for r in risks:
        view = at_risk_view(r, now)
        left = view["minutes_left"]
        when = f"overdue by {-left} min" if left <= 0 else f"due in {left} min"
        print(
            f"  {r.document}  → {r.recipient} ({r.network.value})  due {local(r.due_at)}  {when}  "
            f"waiting for {view['waiting_for']}"
        )
    return 0


# --- audit --------------------------------------------------------------------------------------


def _report(report: AuditReport, *, as_json: bool, what: str, offline: bool = False) -> int:
    if as_json:
        view = asdict(report)
        view["ok"] = report.ok and not (offline and report.unsigned)
        _print_json(view)
    elif report.finding is not None:
        print(f"TAMPERED: {what}: {report.finding.message}")
        print(f"  checked {report.records} records before it ({report.heads} signed heads matched)")
    else:
        span = f"records {report.first_seq}–{report.last_seq}" if report.records else "no records"
        head = report.last_head
        signed = (
            f"last signed head: record {head.seq} at {shown(_utc(head.signed_at))} by {head.signer}"
            if head
            else "no signed head"
        )
        print(f"OK: {what}: {report.records} records ({span}) chained; {report.heads} signed heads verified")
        print(f"  {signed}; {report.unsigned} records after it are chained but not yet signed")
    if report.finding is not None:
        return EXIT_TAMPERED
    if offline and report.unsigned:
        # An export ends at a signed head; records after one cannot be vouched for offline.
        print(f"NOT PROVEN: the last {report.unsigned} records of the export are covered by no signed head")
        return EXIT_TAMPERED
    return 0


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def verify_file(args: argparse.Namespace) -> int:
    if not args.trust:
        raise BadRequest("--file needs --trust PEM: the trust anchors the export is checked against")
    anchors = anchors_from_pem(Path(args.trust).read_bytes())
    with open(args.file, encoding="utf-8") as lines:
        header, report = verify_export((line.rstrip("\n") for line in lines), anchors)
    what = f"export of node {header.get('node')} ({header.get('from')} – {header.get('to')})"
    return _report(report, as_json=args.json, what=what, offline=True)


def verify_db(config: Config, args: argparse.Namespace) -> int:
    since = _moment(args.since) if args.since else None
    anchors = load_trust_anchors(config.certs)
    report = _with_store(config, lambda o: _check_stored(o, anchors, since))
    what = "delivery log" + (f" from {args.since}" if since else "")
    return _report(report, as_json=args.json, what=what)


def _moment(text: str, *, end_of_day: bool = False) -> datetime:
    return parse_moment(text, now=datetime.now(UTC), end_of_day=end_of_day)


async def _check_stored(
    oversight: SqlOversight,
    anchors: TrustAnchors,
    since: datetime | None,
    *,
    upto: int | None = None,
    sink: Callable[[AuditRecord], None] | None = None,
) -> AuditReport:
    """Stream the stored chain (from ``since``) through the verifier in a worker thread."""
    previous, first_seq = GENESIS, 1
    if since is not None:
        start = await oversight.first_seq_at(since)
        if start is None:
            return AuditReport(0, None, None, 0, None, 0, None)
        before = await oversight.audit_record_before(start)
        previous, first_seq = (before.hash, before.seq + 1) if before else (GENESIS, 1)
    heads = [h for h in await oversight.audit_heads(from_seq=first_seq) if upto is None or h.seq <= upto]
    records = _stream(oversight, first_seq - 1, upto, sink, asyncio.get_running_loop())
    return await asyncio.to_thread(
        verify_log, records, heads, anchors, previous=previous, first_seq=first_seq
    )


def _stream(
    oversight: SqlOversight,
    after: int,
    upto: int | None,
    sink: Callable[[AuditRecord], None] | None,
    loop: asyncio.AbstractEventLoop,
) -> Iterator[AuditRecord]:
    """Records in seq order, fetched in batches on the event loop for the verifier's thread."""
    while True:
        future = asyncio.run_coroutine_threadsafe(oversight.audit_records(after=after, limit=10_000), loop)
        batch = future.result()
        for record in batch:
            if upto is not None and record.seq > upto:
                return
            if sink is not None:
                sink(record)
            yield record
        if not batch:
            return
        after = batch[-1].seq


def export(config: Config, args: argparse.Namespace) -> int:
    since = _moment(args.since)
    until = _moment(args.until, end_of_day=True) if args.until else datetime.now(UTC)
    anchors = load_trust_anchors(config.certs)
    output = Path(args.output)
    partial = output.with_name(f".{output.name}.partial")

    async def work(oversight: SqlOversight) -> tuple[int, AuditReport, int]:
        first = await oversight.first_seq_at(since)
        after_end = await oversight.first_seq_at(until)
        last = (after_end - 1) if after_end is not None else await oversight.last_seq()
        if first is None or last < first:
            raise NotFound(f"the delivery log has no record from {args.since} to {args.until or 'now'}")
        heads = await oversight.audit_heads(from_seq=first)
        # End at a signed head, so that every exported record is vouched for offline.
        covering = next((h for h in heads if h.seq >= last), None) or (heads[-1] if heads else None)
        if covering is None:
            raise NotFound(
                f"no signed head covers record {first} yet: the node signs one every minute "
                "(or run `gateway audit sign`)"
            )
        end = covering.seq
        kept = [h for h in heads if h.seq <= end]
        header = {
            "node": config.node, "exported_at": datetime.now(UTC).isoformat(), "from": since.isoformat(),
            "to": until.isoformat(), "first_seq": first, "last_seq": end, "heads": len(kept),
        }  # fmt: skip
        with open(partial, "w", encoding="utf-8") as out:
            lines = export_lines(header, kept, [])
            out.write("".join(line + "\n" for line in lines))

            def write(record: AuditRecord) -> None:
                out.write(json.dumps({"type": "record", **asdict(record)}, ensure_ascii=False) + "\n")

            report = await _check_stored(oversight, anchors, since, upto=end, sink=write)
        return end, report, last

    try:
        end, report, last = _with_store(config, work)
        if report.finding is not None:
            raise AuditError(f"the stored log is broken, nothing exported: {report.finding.message}")
        os.replace(partial, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    print(f"exported records {report.first_seq}–{end} and {report.heads} signed heads to {output}")
    if end < last:
        print(f"  records {end + 1}–{last} are not signed yet and were left out; export again later")
    print(f"  verify offline with: gateway audit verify --file {output} --trust {config.certs / 'trust.pem'}")
    return 0


def sign(config: Config, args: argparse.Namespace) -> int:
    sealer = config.network or Network.GOVERNMENT

    def signing_key() -> tuple[PrivateKey, Any]:
        seal = load_seal_key(config.certs, sealer)
        return seal.key, seal.chain[0]

    anchors = load_trust_anchors(config.certs)

    async def work(oversight: SqlOversight) -> SignedHead | None:
        signer = HeadSigner(oversight, signing_key, anchors, SystemClock(), node=config.node)
        return await signer.sign_once()

    head = _with_store(config, work)
    if head is None:
        print("nothing signed: no record since the last head, or the log is broken (`gateway audit verify`)")
        return 0
    print(f"signed the head of the delivery log: record {head.seq} ({head.hash[:16]}…) by {head.signer}")
    return 0


# --- operators ----------------------------------------------------------------------------------


def issue_operator(config: Config, args: argparse.Namespace) -> int:
    """``gateway operator issue NAME``: the same as ``gateway certs issue --operator NAME``."""
    from gateway.cli import certs as certs_commands

    same = argparse.Namespace(
        certs_action="issue", operator=args.name, agency=None, role=None, key="p256",
        days=args.days, by=None, json=False,
    )  # fmt: skip
    return certs_commands.run(config, same)
