"""XMLDSig over large packages: the gateway's verifier (libxmlsec1, in place) against signxml.

Builds edoc packages of about 1, 5, 10 and 48 MB (one scanned attachment of random bytes), signs
each with the gateway's ``sign_enveloped`` and verifies it with ``verify_enveloped`` and with
signxml's ``XMLVerifier`` (the gateway's verifier before issue 13), each in a fresh process so
that peak memory is that one verification's. Prints seconds and the peak RSS growth above the
high-water mark of building the package and its tree (so +0: within what holding them took).

    .venv/bin/python bench/xmldsig.py [--sizes 1,5,10,48]

A benchmark, not a test: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(size_mb: float, verifier: str) -> dict[str, object]:
    from gateway.crypto.issuing import generate_key, make_root_ca
    from gateway.crypto.pki import KeyType
    from gateway.crypto.xmldsig import sign_enveloped, verify_enveloped
    from gateway.domain.edxml import Attachment, NewEdoc, Organ, build_edoc, signature_location
    from gateway.domain.xmlsafe import parse_xml

    key = generate_key(KeyType.P256)
    cert = make_root_ca(key, "Signer", datetime.now(UTC), 1)
    doc = NewEdoc(
        sender=Organ("000.00.00.G22"),
        recipients=[Organ("000.00.00.A01")],
        document_id="000.00.00.G22,2026/12/04,1/SIG",
        subject="x",
        attachments=(Attachment("scan.pdf", "application/pdf", os.urandom(int(size_mb * 1e6 * 0.74))),),
    )
    from lxml import etree

    raw = etree.tostring(sign_enveloped(build_edoc(doc, now=datetime.now(UTC)), key, [cert]))
    root = parse_xml(raw, max_bytes=len(raw))
    before = _rss_mb()
    start = time.perf_counter()
    try:
        if verifier == "libxmlsec1":
            verify_enveloped(root, location=signature_location(root), check_certificate=lambda c: c)
        else:
            from signxml.verifier import XMLVerifier

            XMLVerifier().verify(root, x509_cert=cert, expect_references=1)
        outcome = "verified"
    except Exception as exc:  # what signxml raises on a large package is the point of the bench
        outcome = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
    took = time.perf_counter() - start
    return {"mb": len(raw) / 1e6, "seconds": took, "rss_growth_mb": _rss_mb() - before, "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,10,48")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "VERIFIER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(float(args.one[0]), args.one[1])))
        return
    for size in (float(s) for s in args.sizes.split(",")):
        for verifier in ("libxmlsec1", "signxml"):
            done = subprocess.run(
                [sys.executable, __file__, "--one", str(size), verifier],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(done.stdout)
            grown = f"+{r['rss_growth_mb']:5.0f} MB"
            print(
                f"{r['mb']:6.1f} MB  {verifier:<10}  {r['seconds']:6.3f} s  {grown}  {r['outcome']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
