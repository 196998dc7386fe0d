"""Schema checks: ``schemas_xml/edxml.xsd`` for packages, ``gateway.xsd`` for sealed transfers.

Everything that enters the gateway as XML goes through ``gateway.domain.xmlsafe.parse_xml`` (the
one hardened parser) and then one of these before anything else looks at it.
"""

from __future__ import annotations

import binascii
import re
from typing import Any, cast

from lxml import etree

import schemas_xml
from gateway.domain.edxml.names import ENVELOPE, GW, NS, ROOT
from gateway.domain.edxml.reading import Edoc, Status, read_package
from gateway.errors import SchemaInvalid

_QUOTED_VALUE = re.compile(r"(?<!Element )'[^']*'")


def _validate(schema: etree.XMLSchema, root: etree._Element, what: str) -> None:
    # Validated while re-reading the tree's own serialisation, not with assertValid: libxml2's
    # validator goes on after the first error and lxml's collection of the errors grows with their
    # square (4,000 bad elements: 0.6 s, 8,000: about 2.4 s), which one package could exploit
    # within every parser limit. A validating parser stops at the first error: linear, and for an
    # ordinary package about one more parse (tens of microseconds).
    # A parser of its own each time: a parser's error log outlives the call, and parsers are not
    # thread-safe; making one costs microseconds. Same hardening as the one parser (huge_tree
    # included: the tree has passed its XmlLimits already).
    parser = etree.XMLParser(
        schema=schema, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True
    )
    # libxml2's validator gathers a text node's characters with repeated concatenation: quadratic
    # in its length (16 MB of one attachment took 0.6 s, 36 MB over 5). An attachment's base64 is
    # checked here instead, in linear time, and the validator sees a stand-in of the same type.
    held = [(node, node.text or "") for node in root.iter(_ENCODED) if len(node.text or "") > _LONG_TEXT]
    for _, text in held:  # all checked before any is replaced: a refusal leaves the tree as it was
        _check_base64(text, what)
    try:
        for node, _ in held:
            node.text = "AAAA"
        # As UTF-8: lxml's default serialisation is ASCII, every Vietnamese letter a character
        # reference, and the validating parser reads those about four times slower (220 µs
        # against 54 for an ordinary 12 KB package, most of the schema check).
        etree.fromstring(etree.tostring(root, encoding="UTF-8", xml_declaration=False), parser)
    except etree.XMLSyntaxError as exc:
        # The thread's error log keeps earlier parses' entries: this one's is the last. Validation
        # while parsing gives no line numbers; the message names the element instead.
        entries: list[Any] = list(cast(Any, exc.error_log))
        raise _schema_error(entries[-1] if entries else None, what) from None
    finally:
        for node, text in held:
            node.text = text


_ENCODED = f"{{{NS}}}ContentTransferEncoded"
_LONG_TEXT = 64 * 1024
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")


def _check_base64(text: str, what: str) -> None:
    """``xs:base64Binary``, as the schema would have held it: the alphabet, white space anywhere,
    padding only at the end (strict decoding, which also checks the length)."""
    if not _BASE64.fullmatch(text):
        raise SchemaInvalid(
            f"{what} does not match the schema: an attachment's ContentTransferEncoded is not base64"
        )
    try:
        binascii.a2b_base64("".join(text.split()), strict_mode=True)
    except binascii.Error:
        raise SchemaInvalid(
            f"{what} does not match the schema: an attachment's ContentTransferEncoded is not valid base64"
        ) from None


def _schema_error(err: etree._LogEntry | None, what: str) -> SchemaInvalid:
    # Messages may quote values (a subject, say); a classified one must not reach logs or the client.
    message = _QUOTED_VALUE.sub("'…'", err.message) if err is not None else "invalid"
    line = f" (line {err.line})" if err is not None and err.line > 0 else ""
    return SchemaInvalid(f"{what} does not match the schema{line}: {message}")


def validate_package(root: etree._Element) -> Edoc | Status:
    """Check an edoc or status package, rooted at ``edXML`` or ``edXMLEnvelope``: the schema,
    then the rules the schema cannot say (one value per acted-on field, agency codes, dates,
    attachments), so that a package is refused before its signature is even looked at.

    Returns the facts as read from ``root`` now, before any signature is checked: act on them
    only where the verified tree is this one, unchanged (see ``check_package``)."""
    if root.tag not in (ROOT, ENVELOPE):
        raise SchemaInvalid(
            "the root element must be edXML (as the VXP SDKs write it) or edXML:edXMLEnvelope, "
            f"in namespace {NS}"
        )
    _validate(schemas_xml.package_schema(), root, "the edXML package")
    return read_package(root)


def validate_transfer(root: etree._Element) -> None:
    """Check a sealed transfer against ``schemas_xml/gateway.xsd``."""
    if root.tag != f"{{{GW}}}Transfer":
        raise SchemaInvalid(f"the root element must be gw:Transfer in namespace {GW}")
    _validate(schemas_xml.transfer_schema(), root, "the sealed transfer")
