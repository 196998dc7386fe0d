"""What the commands share in how they answer: JSON, local time, the default DocumentId."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def default_document_id(code: str, now: datetime) -> str:
    return f"{code},{now:%Y/%m/%d},{secrets.randbelow(10**6)}/GW"


def is_signed(root: etree._Element) -> bool:
    return root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue") is not None


def local_time(iso: str | None) -> str:
    if not iso:
        return "-"
    return (
        datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")
    )
