"""What the hardened parser costs on real packages, and how fast it refuses hostile ones.

Real packages (one recipient; 3,000 recipients; a 6 MB attachment) are parsed within the default
limits; hostile ones are refused: the 2.6 MB package of 100,000 namespace declarations with a real
certificate and a bogus signature value (issue 12, finding 1), the same declarations inside
``Subject``, and 48 MB of empty elements. ``--unbounded`` also times what the first of them costs
when the parser lets it through (the intake's parse, schema and signature check): about 20-30 s.

    PYTHONPATH=. .venv/bin/python bench/parser_limits.py [--unbounded]

Best of several runs, in one process. A benchmark, not a test: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.agency_side.packages import sign_package
from gateway.domain.edxml import Attachment, NewEdoc, Organ, build_edoc
from gateway.domain.xmlsafe import XmlLimits, parse_xml
from gateway.errors import GatewayError
from gateway.exchange.checking import check_package
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import init_home

SENDER = "000.00.00.G22"


def package(config: Config, recipients: list[str], attachments: tuple[Attachment, ...] = ()) -> bytes:
    doc = NewEdoc(
        sender=Organ(SENDER),
        recipients=[Organ(r) for r in recipients],
        document_id=f"{SENDER},2026/11/22,1/GW",
        subject="Về việc đo bộ phân tích",
        content="Nội dung văn bản " * 50,
        attachments=attachments,
    )
    return sign_package(config.certs, SENDER, build_edoc(doc, now=datetime.now(UTC)))


def declarations(raw: bytes, n: int, *, where: bytes) -> bytes:
    bogus = re.sub(rb"(<ds:SignatureValue>)[^<]*(<)", rb"\g<1>" + b"QUJD" * 22 + rb"\2", raw)
    at = bogus.index(where) + len(where)
    return bogus[:at] + b"".join(b' xmlns:n%d="urn:x:%d"' % (i, i) for i in range(n)) + bogus[at:]


def best(fn: Callable[[], object], runs: int) -> tuple[float, str]:
    fastest, outcome = float("inf"), ""
    for _ in range(runs):
        start = time.perf_counter()
        try:
            fn()
            outcome = "parsed"
        except GatewayError as exc:
            outcome = f"{type(exc).__name__}: {exc.message}"
        fastest = min(fastest, time.perf_counter() - start)
    return fastest, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unbounded", action="store_true", help="also time the hostile package unbounded")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="gw-parser-"))
    init_home(home, now=datetime.now(UTC))
    config = load_config(home)
    communes = [f"H41.{i // 100 + 10:02d}.{i % 100:02d}" for i in range(3000)]
    one = package(config, ["000.00.00.A01"])
    cases = {
        "signed, 1 recipient": one,
        "signed, 3,000 recipients": package(config, communes),
        "signed, 6 MB attachment": package(
            config, ["000.00.00.A01"], (Attachment("a.pdf", "application/pdf", os.urandom(6_000_000)),)
        ),
        "100,000 xmlns on the root, bogus signature": declarations(one, 100_000, where=b"<edXML"),
        "100,000 xmlns on Subject, bogus signature": declarations(one, 100_000, where=b"<edXML:Subject"),
        "48 MB of empty elements": b"<a>" + b"<b/>" * 12_000_000 + b"</a>",
    }
    for name, raw in cases.items():
        runs = 200 if len(raw) < 100_000 else 5
        seconds, outcome = best(lambda: parse_xml(raw), runs)  # noqa: B023 (called before the next raw)
        print(f"{name} ({len(raw) / 1e6:.2f} MB): {seconds * 1000:.1f} ms, {outcome[:90]}")
    if args.unbounded:
        raw = cases["100,000 xmlns on the root, bogus signature"]
        lifted = XmlLimits(max_namespaces=10**6, max_namespaces_per_element=10**6)

        # The intake's CPU phase (parse, schema, signature) as a checker runs it, limits lifted.
        seconds, outcome = best(lambda: check_package(raw, lifted), 1)
        print(f"the same package with the namespace limits lifted: {seconds:.1f} s, {outcome[:90]}")


if __name__ == "__main__":
    main()
