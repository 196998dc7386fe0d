"""The one hardened parser bounds what makes canonicalising a package expensive, refuses every
processing instruction and accepts UTF-8 only: checked on ``parse_xml`` itself and through the
real API (issue 12 items 1, 3 and 8; issue 11 item 6)."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path

import pytest

from gateway.domain.xmlsafe import DEFAULT_LIMITS, XmlLimits, parse_xml
from gateway.errors import ConfigError, ForbiddenXmlConstruct, MalformedXml
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import Node
from tests.api_contract import contract_session
from tests.conftest import A01, G22, AgencyClient, client_context, make_package, set_setting

SMALL = XmlLimits(
    max_depth=4,
    max_elements=10,
    max_attributes_per_element=3,
    max_namespaces_per_element=2,
    max_namespaces=4,
    max_name_length=8,
    max_prefix_length=4,
    max_namespace_uri_length=16,
)
MARK = "zq"  # every name and URI the cases below make up contains it: it must never be echoed


def over(limit: str, n: int) -> bytes:
    """A small document holding ``n`` of what ``limit`` counts (or ``n`` characters of it)."""
    if limit == "max_depth":
        return b"<zq>" * n + b"</zq>" * n
    if limit == "max_elements":
        return b"<zq>" + b"<zq/>" * (n - 1) + b"</zq>"
    if limit == "max_attributes_per_element":
        return b"<zq " + b" ".join(b'zq%d="1"' % i for i in range(n)) + b"/>"
    if limit == "max_namespaces_per_element":
        return b"<zq " + b" ".join(b'xmlns:zq%d="u:zq"' % i for i in range(n)) + b"/>"
    if limit == "max_namespaces":  # two on each element: never more than the per-element limit
        decls = [b'xmlns:zq%d="u:zq"' % i for i in range(n)]
        pairs = [b" ".join(decls[i : i + 2]) for i in range(0, n, 2)]
        return b"".join(b"<zq %s>" % p for p in pairs) + b"</zq>" * len(pairs)
    if limit == "max_name_length":
        return b"<zq" + b"q" * (n - 2) + b"/>"
    if limit == "attribute max_name_length":
        return b"<zq " + b"zq" + b"q" * (n - 2) + b'="1"/>'
    if limit == "max_prefix_length":
        prefix = b"zq" + b"q" * (n - 2)
        return b"<%s:a xmlns:%s='u:zq'/>" % (prefix, prefix)
    if limit == "max_namespace_uri_length":
        return b"<a xmlns='u:zq" + b"q" * (n - 4) + b"'/>"
    raise AssertionError(limit)


CASES = {
    "max_depth": SMALL.max_depth,
    "max_elements": SMALL.max_elements,
    "max_attributes_per_element": SMALL.max_attributes_per_element,
    "max_namespaces_per_element": SMALL.max_namespaces_per_element,
    "max_namespaces": SMALL.max_namespaces,
    "max_name_length": SMALL.max_name_length,
    "attribute max_name_length": SMALL.max_name_length,
    "max_prefix_length": SMALL.max_prefix_length,
    "max_namespace_uri_length": SMALL.max_namespace_uri_length,
}


@pytest.mark.parametrize("limit", sorted(CASES))
def test_each_limit_admits_its_value_and_refuses_one_more_naming_itself(limit: str) -> None:
    value = CASES[limit]
    parse_xml(over(limit, value), limits=SMALL)
    with pytest.raises(ForbiddenXmlConstruct) as refused:
        parse_xml(over(limit, value + 1), limits=SMALL)
    name = limit.split()[-1]
    assert f"the limit is {value} ({name})" in refused.value.message
    assert MARK not in refused.value.message


def test_every_limit_has_a_case_and_a_positive_safe_default() -> None:
    names = {f.name for f in fields(XmlLimits)} - {"max_bytes"}
    assert names == {c.split()[-1] for c in CASES}
    assert DEFAULT_LIMITS.max_namespaces == 64 and DEFAULT_LIMITS.max_depth == 64
    for bad in (0, -1, True, 2.5, "8"):
        with pytest.raises(ValueError):
            XmlLimits(max_namespaces=bad)  # type: ignore[arg-type]


def test_a_flood_of_elements_is_refused_at_the_first_element_too_many() -> None:
    # 4.8 MB of empty elements: refused on max_elements while libxml2 is still reading.
    with pytest.raises(ForbiddenXmlConstruct, match=r"the limit is 1000 \(max_elements\)"):
        parse_xml(b"<a>" + b"<b/>" * 1_200_000 + b"</a>", limits=XmlLimits(max_elements=1000))


@pytest.mark.parametrize(
    "raw",
    [
        b"<?xml version='1.0'?><?xml-stylesheet href='x.xsl'?><a/>",
        b"<?pi first?><a/>",
        b"<a><b><?pi inside?></b></a>",
        b"<a/><?pi after?>",
        b"<a/><!-- c --><?pi after a comment?>",
    ],
)
def test_processing_instructions_are_refused_wherever_they_are(raw: bytes) -> None:
    with pytest.raises(ForbiddenXmlConstruct, match="processing instructions are not allowed"):
        parse_xml(raw)


def test_comments_stay_allowed() -> None:
    root = parse_xml(b"<!-- before --><a><!-- inside --><b/></a><!-- after -->")
    assert root.tag == "a"


def test_an_undeclared_entity_is_malformed() -> None:
    with pytest.raises(MalformedXml):
        parse_xml(b"<a>&zq;</a>")


DOC = "<?xml version='1.0' encoding='{enc}'?><a>Về việc</a>"
WIDE = ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]


def wide(text: str, codec: str, *, bom: bool) -> bytes:
    marks = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}
    marks |= {"utf-32-le": b"\xff\xfe\x00\x00", "utf-32-be": b"\x00\x00\xfe\xff"}
    return (marks[codec] if bom else b"") + text.encode(codec)


@pytest.mark.parametrize("codec", WIDE)
@pytest.mark.parametrize("bom", [True, False], ids=["bom", "no-bom"])
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_utf16_and_utf32_are_refused_as_not_utf8(codec: str, bom: bool, declared: bool) -> None:
    text = DOC.format(enc=codec[:6].upper()) if declared else "<a>Về việc</a>"
    with pytest.raises(MalformedXml, match="only UTF-8 is accepted"):
        parse_xml(wide(text, codec, bom=bom))


def test_a_doctype_in_utf16_never_reaches_the_doctype_scan_as_something_else() -> None:
    raw = wide("<!DOCTYPE a [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><a>&x;</a>", "utf-16-le", bom=True)
    with pytest.raises(MalformedXml, match="only UTF-8 is accepted"):
        parse_xml(raw)


@pytest.mark.parametrize("encoding", ["ISO-8859-1", "windows-1258", "US-ASCII", "UTF-16", "utf8"])
def test_a_declaration_naming_another_encoding_is_refused(encoding: str) -> None:
    with pytest.raises(MalformedXml, match="only UTF-8 is accepted"):
        parse_xml(f"<?xml version='1.0' encoding='{encoding}'?><a>x</a>".encode("ascii"))


def test_a_declaration_that_lies_about_the_bytes_is_refused() -> None:
    with pytest.raises(MalformedXml):
        parse_xml(b"<?xml version='1.0' encoding='UTF-8'?><a>V\xea</a>")  # Latin-1
    with pytest.raises(MalformedXml):
        parse_xml("<a>café</a>".encode("latin-1"))


@pytest.mark.parametrize("prefix", [b"+/v8", b"\x4c\x6f\xa7\x94", b"\x84\x31\x95\x33", b"abc"])
def test_other_byte_order_marks_and_non_xml_starts_are_refused(prefix: bytes) -> None:
    with pytest.raises(MalformedXml, match="only UTF-8 is accepted"):
        parse_xml(prefix + b"<a/>")


def test_utf8_with_or_without_bom_and_declaration_is_accepted() -> None:
    for raw in (
        DOC.format(enc="UTF-8").encode(),
        DOC.format(enc="utf-8").encode(),
        b"\xef\xbb\xbf" + DOC.format(enc="UTF-8").encode(),
        "\n  <a>Về việc</a>".encode(),
    ):
        assert parse_xml(raw).text == "Về việc"


# --- through the real API ------------------------------------------------------------------------


def into_root_tag(raw: bytes, extra: bytes) -> bytes:
    """``extra`` (attributes or declarations) added to the start tag of the package's root."""
    found = re.search(rb"<[A-Za-z_][\w.:-]*", raw[raw.index(b"?>") + 2 :])
    assert found is not None
    at = raw.index(b"?>") + 2 + found.end()
    return raw[:at] + extra + raw[at:]


def bogus_signature(raw: bytes) -> bytes:
    bogus = b"QUJD" * 22  # base64 of the right shape, signing nothing
    return re.sub(rb"(<ds:SignatureValue>)[^<]*(</ds:SignatureValue>)", rb"\g<1>" + bogus + rb"\2", raw)


async def test_the_100000_declaration_package_is_refused_by_the_parser(
    node: Node, config: Config, agency
) -> None:
    # Finding 1 of issue 12: 2.6 MB, a real agency certificate in KeyInfo, a bogus signature value;
    # it once held a worker for 20 s inside the signature verifier.
    declarations = b"".join(b' xmlns:n%d="urn:x:%d"' % (i, i) for i in range(100_000))
    hostile = into_root_tag(bogus_signature(make_package(config, G22, [A01])), declarations)
    assert b"<ds:X509Certificate>" in hostile and len(hostile) > 2_600_000
    status, body = await agency(G22).call("POST", "/v1/edocs", io.BytesIO(hostile))
    assert (status, body["error"]) == (400, "forbidden_xml")
    assert f"the limit is {DEFAULT_LIMITS.max_namespaces} (max_namespaces)" in body["message"]
    status, _ = await agency(A01).call("GET", "/v1/inbox")
    assert status == 200


def hostile(limit: str, raw: bytes) -> bytes:
    """A real signed package pushed one past the default ``limit``, where the schema carries content
    unread or before the schema would look."""
    lim = DEFAULT_LIMITS
    if limit == "max_depth":
        n = lim.max_depth
        return raw.replace(b"</edXML:Subject>", b"<zq>" * n + b"</zq>" * n + b"</edXML:Subject>", 1)
    if limit == "max_elements":
        return raw.replace(b"</edXML:Subject>", b"<zq/>" * lim.max_elements + b"</edXML:Subject>", 1)
    if limit == "max_attributes_per_element":
        return into_root_tag(
            raw, b"".join(b' zq%d="1"' % i for i in range(lim.max_attributes_per_element + 1))
        )
    if limit == "max_namespaces_per_element":
        n = lim.max_namespaces_per_element + 1
        return into_root_tag(raw, b"".join(b' xmlns:zq%d="u:zq"' % i for i in range(n)))
    if limit == "max_namespaces":  # 13 on each of 5 elements: 65 in all, none over its own limit
        decls = b"".join(b' xmlns:zq%d="u:zq"' % i for i in range(13))
        return raw.replace(b"<edXML:Subject>", b"<edXML:Subject>" + (b"<zq%s/>" % decls) * 5, 1)
    if limit == "max_name_length":
        return into_root_tag(raw, b" zq" + b"q" * lim.max_name_length + b'="1"')
    if limit == "max_prefix_length":
        prefix = b"zq" + b"q" * lim.max_prefix_length
        return into_root_tag(raw, b" xmlns:" + prefix + b'="u:zq"')
    if limit == "max_namespace_uri_length":
        return into_root_tag(raw, b' xmlns:zq="u:zq' + b"q" * lim.max_namespace_uri_length + b'"')
    raise AssertionError(limit)


@pytest.mark.parametrize("limit", sorted(n for n in CASES if " " not in n))
async def test_each_default_limit_is_refused_by_the_api_naming_itself(
    node: Node, config: Config, agency, limit: str
) -> None:
    raw = make_package(config, G22, [A01])
    status, body = await agency(G22).send(hostile(limit, raw))
    assert (status, body["error"]) == (400, "forbidden_xml")
    assert f"the limit is {getattr(DEFAULT_LIMITS, limit)} ({limit})" in body["message"]
    assert MARK not in body["message"]


PI = b"<?xml-stylesheet type='text/xsl' href='http://127.0.0.1:9/x.xsl'?>"


@pytest.mark.parametrize("where", ["prolog", "Subject", "edXMLBody", "after root"])
@pytest.mark.parametrize("root", ["edXML", "edXMLEnvelope"])
async def test_a_processing_instruction_anywhere_is_refused(
    node: Node, config: Config, agency, where: str, root: str
) -> None:
    raw = make_package(config, G22, [A01], root=root)
    if where == "prolog":
        at = raw.index(b"?>") + 2
        placed = raw[:at] + PI + raw[at:]
    elif where == "after root":
        placed = raw + PI
    else:
        placed = raw.replace(b"<edXML:%s>" % where.encode(), b"<edXML:%s>" % where.encode() + PI, 1)
    assert placed != raw
    status, body = await agency(G22).send(placed)
    assert (status, body["error"]) == (400, "forbidden_xml")
    assert "processing instructions" in body["message"]


@pytest.mark.parametrize("codec", WIDE)
@pytest.mark.parametrize("bom", [True, False], ids=["bom", "no-bom"])
async def test_utf16_and_utf32_packages_are_refused(
    node: Node, config: Config, agency, codec: str, bom: bool
) -> None:
    text = make_package(config, G22, [A01]).decode("utf-8")
    # With a BOM the declaration says what the bytes are; without one there is no declaration.
    text = (
        text.replace("encoding='UTF-8'", f"encoding='{codec[:6].upper()}'")
        if bom
        else text[text.index("?>") + 2 :]
    )
    status, body = await agency(G22).send(wide(text, codec, bom=bom))
    assert (status, body["error"]) == (400, "malformed_xml")
    assert "only UTF-8 is accepted" in body["message"]


async def test_a_lying_or_foreign_declaration_is_refused_on_both_roots(
    node: Node, config: Config, agency
) -> None:
    for root in ("edXML", "edXMLEnvelope"):
        raw = make_package(config, G22, [A01], root=root, subject=f"Về việc gốc {root}")
        lying = raw.replace("Về".encode(), b"V\xea", 1)  # a Latin-1 byte under a UTF-8 declaration
        foreign = raw.replace(b"encoding='UTF-8'", b"encoding='windows-1258'", 1)
        assert lying != raw and foreign != raw
        for bad in (lying, foreign):
            status, body = await agency(G22).send(bad)
            assert (status, body["error"]) == (400, "malformed_xml")
        status, _ = await agency(G22).send(raw)
        assert status == 202


# --- configuration -------------------------------------------------------------------------------


def test_the_default_config_text_gives_the_built_in_limits(config: Config) -> None:
    assert config.xml_limits == XmlLimits(max_bytes=config.max_package_bytes)


@pytest.mark.parametrize("value", ["0", "-3", "65", "1.5", '"8"', "true"])
def test_a_limit_may_only_be_lowered(home: Path, value: str) -> None:
    set_setting(home, "xml_max_namespaces", value)
    with pytest.raises(ConfigError, match="xml_max_namespaces"):
        load_config(home)


def test_an_unknown_xml_setting_is_refused(home: Path) -> None:
    with (home / "gateway.toml").open("a") as f:
        f.write("xml_max_zq = 3\n")
    with pytest.raises(ConfigError, match="xml_max_zq"):
        load_config(home)


@pytest.fixture
async def strict_node(home: Path) -> AsyncIterator[Node]:
    """A node whose operator lowered two limits below what an ordinary package needs."""
    set_setting(home, "xml_max_namespaces", "2")  # a package declares 3: edXML twice and ds
    set_setting(home, "xml_max_elements", "4000")
    n = Node(load_config(home))
    await n.start(port=0)
    try:
        yield n
    finally:
        await n.stop()


async def test_a_lowered_limit_takes_effect(strict_node: Node, home: Path) -> None:
    config = load_config(home)
    assert config.xml_limits.max_namespaces == 2 and config.xml_limits.max_elements == 4000
    async with contract_session(client_context(config, G22)) as session:
        client = AgencyClient(G22, session, f"https://localhost:{strict_node.port}")
        status, body = await client.send(make_package(config, G22, [A01]))
        assert (status, body["error"]) == (400, "forbidden_xml")
        assert "the limit is 2 (max_namespaces)" in body["message"]
