"""The audit export: the log and its signed heads as self-contained JSON lines, checked offline."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

from gateway.audit.heads import SignedHead
from gateway.audit.log import AuditRecord
from gateway.audit.verify import AuditReport, verify_log
from gateway.crypto.pki import TrustAnchors
from gateway.errors import AuditError

EXPORT_FORMAT = "edxml-gateway-audit-export"


def export_lines(
    header: dict[str, Any], heads: Sequence[SignedHead], records: Iterable[AuditRecord]
) -> Iterator[str]:
    """A self-contained JSON-lines export: header, the heads (with their certificates), then the
    records in order; checking it needs only the trust anchors (``verify_export``)."""
    yield json.dumps({"type": EXPORT_FORMAT, "version": 1, **header}, ensure_ascii=False)
    for head in heads:
        yield json.dumps({"type": "head", **asdict(head)}, ensure_ascii=False)
    for record in records:
        yield json.dumps({"type": "record", **asdict(record)}, ensure_ascii=False)


def verify_export(lines: Iterable[str], anchors: TrustAnchors) -> tuple[dict[str, Any], AuditReport]:
    """Check an export offline: every head's certificate and signature, and the chain between them."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, ValueError) as exc:
        raise AuditError("not an audit export: the first line is not a JSON header") from exc
    if not isinstance(header, dict) or header.get("type") != EXPORT_FORMAT or header.get("version") != 1:
        raise AuditError(f"not an audit export of version 1 (expected type {EXPORT_FORMAT!r})")
    heads: list[SignedHead] = []
    pending: list[AuditRecord] = []
    for line in it:
        item = _export_item(line)
        if isinstance(item, SignedHead):
            if pending:
                raise AuditError("a head follows records in the export; heads come first")
            heads.append(item)
        else:
            pending.append(item)
            break

    def records() -> Iterator[AuditRecord]:
        yield from pending
        for line in it:
            item = _export_item(line)
            if not isinstance(item, AuditRecord):
                raise AuditError("a head follows records in the export; heads come first")
            yield item

    return header, verify_log(records(), heads, anchors, previous=None, first_seq=None)


def _export_item(line: str) -> AuditRecord | SignedHead:
    try:
        item = json.loads(line)
        kind = item.pop("type")
        if kind == "record":
            return AuditRecord(**item)
        if kind == "head":
            return SignedHead(**item)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise AuditError(f"unreadable line in the export: {line[:80]!r}") from exc
    raise AuditError(f"unknown item type {kind!r} in the export")
