"""The one hardened XML parser: every byte of XML that enters the gateway is parsed here.

UTF-8 only (decided before anything else reads the bytes), no DTD (refused before libxml2 sees
it), no entities, no network, no processing instructions anywhere, and bounded in everything that
makes canonicalising a tree expensive (:class:`XmlLimits`): size, depth, elements, attributes,
namespace declarations and the length of names, prefixes and namespace URIs. The bounds are
checked while libxml2 parses, so a hostile document is refused at its first breach, before the
rest of it is read and long before a signature verifier copies and canonicalises it.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from lxml import etree

from gateway.errors import ForbiddenXmlConstruct, MalformedXml, PackageTooLarge

DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # the cap one public VXP gateway uses; no official limit exists
DEFAULT_MAX_DEPTH = 64  # the schemas nest at most ~8 deep; anything far deeper is hostile


@dataclass(frozen=True)
class XmlLimits:
    """How much one XML document may hold. Each field is named in its refusal, and ``xml_`` + its
    name is its setting in ``gateway.toml`` (``max_bytes`` is ``max_package_bytes``). The defaults
    leave wide headroom over real packages: a signed SDK-shaped package declares 2-6 namespaces,
    has tens of elements (a few thousand for a national distribution list; the gateway's own
    encryption of it for 3,000 recipients about 51,000), at most 3 attributes on an element and
    names under 25 characters."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_elements: int = 100_000
    max_attributes_per_element: int = 32
    max_namespaces_per_element: int = 16
    # Canonicalisation cost grows with the square of the declarations in scope (finding 1 of
    # issue 12: 100,000 of them held a worker for 20 s), so the whole document is bounded too.
    max_namespaces: int = 64
    max_name_length: int = 256  # local name of an element or attribute
    max_prefix_length: int = 64
    max_namespace_uri_length: int = 512

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{f.name} must be a positive whole number, not {value!r}")


DEFAULT_LIMITS = XmlLimits()

# The XML declaration only: it ends at the first '>' of the document.
_DECLARATION = re.compile(rb"<\?xml[ \t\r\n][^>]*\?>")
_ENCODING = re.compile(rb"""encoding[ \t\r\n]*=[ \t\r\n]*["']([^"']*)["']""")
_UTF8_BOM = b"\xef\xbb\xbf"
_LEADING_SPACE = re.compile(rb"[ \t\r\n]*")
_WIDE_BOMS = (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\xfe\xff", b"\xff\xfe")
_CHUNK = 64 * 1024  # fed to libxml2 at a time, so a breach stops the parse within one chunk
_EVENTS: Final = ("start", "end", "start-ns", "pi")

# What the parser reads: bytes, or a file mapped into memory (``parse_xml_file``), which the checks
# below read by offsets and slices only (an mmap has no ``startswith``).
Raw = bytes | mmap.mmap


def _at(raw: Raw, offset: int, prefix: bytes) -> bool:
    return raw[offset : offset + len(prefix)] == prefix


def _require_utf8(raw: Raw) -> None:
    """Refuse anything but UTF-8 before any other code reads the bytes (issue 11 item 6): every
    later byte-level check (the DOCTYPE scan) then sees ASCII markup as ASCII. The parser is also
    told UTF-8, so a declaration that lies about the bytes fails in libxml2 as invalid UTF-8."""
    if any(_at(raw, 0, bom) for bom in _WIDE_BOMS):
        raise MalformedXml("only UTF-8 is accepted; the package has a UTF-16 or UTF-32 byte order mark")
    # UTF-16 and UTF-32 encode '<' with NUL bytes beside it; NUL is never legal in XML anyway.
    if raw.find(b"\x00") >= 0:
        raise MalformedXml("only UTF-8 is accepted; the package holds NUL bytes (UTF-16 or UTF-32?)")
    # Indexes, not slices: a slice of a 50 MB body is a 50 MB copy.
    start = _LEADING_SPACE.match(raw, len(_UTF8_BOM) if _at(raw, 0, _UTF8_BOM) else 0)
    at = start.end() if start is not None else 0
    if not _at(raw, at, b"<"):
        # Another byte order mark (UTF-7, EBCDIC, GB 18030 ...) or not XML at all.
        raise MalformedXml("only UTF-8 is accepted; the package must begin with '<' or a UTF-8 BOM")
    declaration = _DECLARATION.match(raw, at)
    if declaration is not None:
        encoding = _ENCODING.search(declaration.group())
        if encoding is not None and encoding.group(1).lower() != b"utf-8":
            raise MalformedXml("only UTF-8 is accepted; the XML declaration names another encoding")


def _has_doctype(raw: Raw) -> bool:
    """Whether a DOCTYPE comes before the root element (only the XML declaration, PIs and
    comments may precede it). Scans the prolog only, never the body; UTF-8 bytes only."""
    i = 0
    while (i := raw.find(b"<", i)) >= 0:
        if _at(raw, i, b"<?"):
            end, skip = raw.find(b"?>", i), 2
        elif _at(raw, i, b"<!--"):
            end, skip = raw.find(b"-->", i), 3
        else:
            return _at(raw, i, b"<!DOCTYPE")
        if end < 0:
            return False
        i = end + skip
    return False


def _parser_options() -> dict[str, Any]:
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "dtd_validation": False,
        # libxml2's default limits (10 MB text nodes, depth 256) refuse a scanned attachment of a
        # real package; XmlLimits bounds size, depth, counts and names instead, with our messages.
        "huge_tree": True,
        "remove_blank_text": False,
        "collect_ids": False,
        "encoding": "utf-8",  # never what the document says: only UTF-8 is accepted
    }


def _refuse(what: str, limit: str, value: int) -> ForbiddenXmlConstruct:
    # Names the limit and its number only: never a name, prefix or URI from the document.
    return ForbiddenXmlConstruct(f"{what}; the limit is {value} ({limit})")


def _check(events: Any, limits: XmlLimits, state: list[int]) -> None:
    """Check one batch of parse events against ``limits``; ``state`` carries the running counts
    (depth, elements, namespace declarations, declarations not yet claimed by an element) from
    batch to batch. One list per parse, so the parser shares nothing between threads."""
    depth, elements, namespaces, pending = state
    max_depth, max_elements = limits.max_depth, limits.max_elements
    max_attributes, max_name = limits.max_attributes_per_element, limits.max_name_length
    for event, node in events:
        if event == "end":
            depth -= 1
        elif event == "start":
            depth += 1
            elements += 1
            if depth > max_depth:
                raise _refuse("elements are nested too deep", "max_depth", max_depth)
            if elements > max_elements:
                raise _refuse("the document has too many elements", "max_elements", max_elements)
            if pending > limits.max_namespaces_per_element:
                # start-ns events come just before the start of the element that declares them
                raise _refuse(
                    "an element declares too many namespaces",
                    "max_namespaces_per_element",
                    limits.max_namespaces_per_element,
                )
            pending = 0
            tag = node.tag
            if len(tag) - tag.rfind("}") - 1 > max_name:
                raise _refuse("an element name is too long", "max_name_length", max_name)
            names = node.keys()
            if names:
                if len(names) > max_attributes:
                    raise _refuse(
                        "an element has too many attributes", "max_attributes_per_element", max_attributes
                    )
                for name in names:
                    if len(name) - name.rfind("}") - 1 > max_name:
                        raise _refuse("an attribute name is too long", "max_name_length", max_name)
        elif event == "start-ns":
            prefix, uri = node
            namespaces += 1
            pending += 1
            if namespaces > limits.max_namespaces:
                raise _refuse(
                    "the document declares too many namespaces", "max_namespaces", limits.max_namespaces
                )
            if len(prefix) > limits.max_prefix_length:
                raise _refuse("a namespace prefix is too long", "max_prefix_length", limits.max_prefix_length)
            if len(uri) > limits.max_namespace_uri_length:
                raise _refuse(
                    "a namespace URI is too long", "max_namespace_uri_length", limits.max_namespace_uri_length
                )
        else:  # "pi": in the prolog, inside any element or after the root
            raise ForbiddenXmlConstruct("processing instructions are not allowed")
    state[:] = depth, elements, namespaces, pending


def _parse(raw: Raw, limits: XmlLimits) -> etree._Element:
    state = [0, 0, 0, 0]
    parser = etree.XMLPullParser(events=_EVENTS, **_parser_options())
    with memoryview(raw) as view:  # released before a mapped file is unmapped
        for offset in range(0, len(raw), _CHUNK):
            parser.feed(bytes(view[offset : offset + _CHUNK]))
            _check(parser.read_events(), limits, state)
    root: etree._Element = parser.close()
    _check(parser.read_events(), limits, state)
    return root


def parse_xml(
    raw: Raw,
    *,
    limits: XmlLimits = DEFAULT_LIMITS,
    max_bytes: int | None = None,
    max_depth: int | None = None,
) -> etree._Element:
    """Parse untrusted bytes within ``limits`` (``max_bytes`` and ``max_depth`` override those two).

    UTF-8 only (else ``MalformedXml``), no DTD, entities, network access or processing
    instructions (``ForbiddenXmlConstruct``), every bound of :class:`XmlLimits` checked while
    parsing (``ForbiddenXmlConstruct`` naming the limit; ``PackageTooLarge`` for the size).
    Comments are kept: they are harmless, and a signature over the whole document (``URI=""``)
    drops them before digesting. Entity references need no check of their own: without a DTD
    an undeclared one is a well-formedness error, and the five predefined ones are plain text.
    """
    size_limit = limits.max_bytes if max_bytes is None else max_bytes
    if len(raw) > size_limit:
        raise PackageTooLarge(f"package is {len(raw)} bytes; the limit is {size_limit}")
    if max_depth is not None:
        limits = replace(limits, max_depth=max_depth)
    blank = _LEADING_SPACE.match(raw)
    if blank is not None and blank.end() == len(raw):
        raise MalformedXml("the request body is empty; expected an edXML package")
    _require_utf8(raw)
    if _has_doctype(raw):
        # Refused before libxml2 sees it, so entity tricks never reach the parser at all.
        raise ForbiddenXmlConstruct("a DOCTYPE / DTD is not allowed in an edXML package")
    try:
        root = _parse(raw, limits)
    except etree.XMLSyntaxError as exc:
        # libxml2 messages name a line and a construct (at most an element name), never content.
        raise MalformedXml(f"not well-formed XML: {exc.msg}") from exc
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise ForbiddenXmlConstruct("a DOCTYPE / DTD is not allowed in an edXML package")
    return root


def parse_xml_file(
    path: str,
    *,
    limits: XmlLimits = DEFAULT_LIMITS,
    max_bytes: int | None = None,
    max_depth: int | None = None,
) -> etree._Element:
    """:func:`parse_xml` of a file (a spooled request body), with the same checks in the same
    order: the file is mapped, not read into memory, and refused by its size before that."""
    size_limit = limits.max_bytes if max_bytes is None else max_bytes
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > size_limit:
            raise PackageTooLarge(f"package is {size} bytes; the limit is {size_limit}")
        if size == 0:  # an empty file cannot be mapped; parse_xml refuses an empty body
            return parse_xml(b"", limits=limits, max_bytes=max_bytes, max_depth=max_depth)
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as raw:
            return parse_xml(raw, limits=limits, max_bytes=max_bytes, max_depth=max_depth)
