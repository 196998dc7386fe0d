"""What the commands share in how they answer: JSON, tables, local time, the default DocumentId."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lxml import etree

from gateway.domain.clock import VIETNAM, shown

LOCAL_TZ = VIETNAM


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def default_document_id(code: str, now: datetime) -> str:
    return f"{code},{now:%Y/%m/%d},{secrets.randbelow(10**6)}/GW"


def is_signed(root: etree._Element) -> bool:
    return root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue") is not None


def local_time(iso: str | None) -> str:
    """An ISO 8601 time from the API as people read it: Vietnam time, +07:00 said."""
    if not iso:
        return "-"
    return shown(datetime.fromisoformat(iso.replace("Z", "+00:00")))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a table: a header row, then the rows, each column as wide as its widest cell (the
    last column is not padded). Codes differ in length (``ADAPTER.GOVERNMENT``, operators' names):
    fixed widths broke the alignment."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
