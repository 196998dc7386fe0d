"""What the commands share in how they answer: JSON, tables, local time, the default DocumentId."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

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


class ProgressBar:
    """One line on a terminal, redrawn in place: ``sending  12.3 / 48.0 MB [#####.....]  25 %``;
    a new line once a transfer is done. For ``AgencyClient(progress=...)``."""

    WIDTH = 30

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown = -1

    def __call__(self, phase: str, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent == self._shown and done < total:
            return  # at most one redraw per percent
        self._shown = percent
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        end = "\n" if done >= total else ""
        self._out.write(f"\r{phase:<9} {done / 1e6:6.1f} / {total / 1e6:.1f} MB [{bar}] {percent:3d} %{end}")
        self._out.flush()
        if done >= total:
            self._shown = -1
