"""The one hardened XML parser: every byte of XML that enters the gateway is parsed here.

No DTD (refused before libxml2 sees it), no entities, no network, no processing instructions,
bounded size and depth. lxml parsers are not thread-safe, so each thread builds its own once.
"""

from __future__ import annotations

import threading
from typing import Any

from lxml import etree

from gateway.errors import ForbiddenXmlConstruct, MalformedXml, PackageTooLarge

DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # the cap one public VXP gateway uses; no official limit exists
DEFAULT_MAX_DEPTH = 64  # the schemas nest at most ~8 deep; anything far deeper is hostile

_local = threading.local()


def _has_doctype(raw: bytes) -> bool:
    """Whether a DOCTYPE comes before the root element (only the XML declaration, PIs and
    comments may precede it). Scans the prolog only, never the body."""
    i = 0
    while (i := raw.find(b"<", i)) >= 0:
        if raw.startswith(b"<?", i):
            end, skip = raw.find(b"?>", i), 2
        elif raw.startswith(b"<!--", i):
            end, skip = raw.find(b"-->", i), 3
        else:
            return raw.startswith(b"<!DOCTYPE", i)
        if end < 0:
            return False
        i = end + skip
    return False


def _parser() -> etree.XMLParser:
    # lxml parsers must not be shared between threads; one per thread, built once.
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_blank_text=False,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


def parse_xml(
    raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> etree._Element:
    """Parse untrusted bytes: no DTD, no entities, no network, no PIs, bounded size and depth."""
    if len(raw) > max_bytes:
        raise PackageTooLarge(f"package is {len(raw)} bytes; the limit is {max_bytes}")
    if not raw.strip():
        raise MalformedXml("the request body is empty; expected an edXML package")
    if _has_doctype(raw):
        # Refused before libxml2 sees it, so entity tricks never reach the parser at all.
        raise ForbiddenXmlConstruct("a DOCTYPE / DTD is not allowed in an edXML package")
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        # libxml2 messages name a line and a construct, never the document's text.
        raise MalformedXml(f"not well-formed XML: {exc.msg}") from exc
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise ForbiddenXmlConstruct("a DOCTYPE / DTD is not allowed in an edXML package")
    depth = 0
    for event, node in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            depth += 1
            if depth > max_depth:
                raise ForbiddenXmlConstruct(f"elements are nested deeper than {max_depth} levels")
            if isinstance(node, etree._Entity):
                raise ForbiddenXmlConstruct("entity references are not allowed")
            if isinstance(node, etree._ProcessingInstruction):
                raise ForbiddenXmlConstruct("processing instructions are not allowed")
        else:
            depth -= 1
    # Siblings of the root (a PI before it, say) are outside the walk above.
    for sibling in (*root.itersiblings(preceding=True), *root.itersiblings()):
        if isinstance(sibling, etree._ProcessingInstruction):
            raise ForbiddenXmlConstruct("processing instructions are not allowed")
    return root
