"""Fuzz the signature and the package header through the real API: no client input yields a 5xx.

Every element and attribute of a valid ``ds:Signature``, and every element of the package
header (``edXMLHeader``), is mutated in turn — removed, duplicated, emptied, given text of the
wrong type, given broken base64, moved to another namespace; attributes removed, emptied,
given a wrong value, moved to another namespace. The mutations are enumerated, not random,
so a failure names its case and reproduces.

Three sets go to one server:
- the signature mutated after signing, and the header mutated after signing: every answer is
  a 4xx with a stable code (the signature can no longer hold);
- the header mutated *before* signing, signed again by the sender: the signature holds, so
  what it signed reaches the reader of the package and the intake rules. Such a package may be
  valid (an extra TraceHeader is), so the answer is a 2xx or a 4xx with a stable code.
After each batch the server must still answer ``/healthz``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from copy import deepcopy

from lxml import etree

from gateway.agency_side.packages import sign_package
from gateway.errors import ClientError, GatewayError
from gateway.runtime.config import Config
from gateway.runtime.node import Node
from tests.conftest import A01, G22, make_package

DS = "http://www.w3.org/2000/09/xmldsig#"
ELSEWHERE = "urn:example:fuzz:elsewhere"
BATCH = 12  # requests in flight at once; the server's health is checked after each batch
MOST_CASES = 450  # the bound on the test's size: a few hundred requests


def client_codes(cls: type[ClientError] = ClientError) -> set[str]:
    """Every stable code of the client-error tree."""
    return {cls.code}.union(*(client_codes(sub) for sub in cls.__subclasses__()))


def _is_element(node: etree._Element) -> bool:
    return isinstance(node.tag, str)


def _elements(top: etree._Element) -> list[etree._Element]:
    return [node for node in top.iter() if _is_element(node)]


def _path(node: etree._Element) -> str:
    """A readable path for a case's name: local names from the root, with positions."""
    parts = []
    while node is not None:
        parent = node.getparent()
        local = etree.QName(node).localname
        if parent is not None:
            same = [c for c in parent if _is_element(c) and etree.QName(c).localname == local]
            if len(same) > 1:
                local += f"[{same.index(node) + 1}]"
        parts.append(local)
        node = parent  # type: ignore[assignment]
    return "/".join(reversed(parts))


def _truncated(text: str | None) -> str:
    # Base64 with its end cut off: still the alphabet, but neither a whole value nor padded.
    text = "".join((text or "").split())
    return text[: max(1, len(text) - 3)] if len(text) > 4 else "A"


Edit = Callable[[etree._Element], None]


def _element_edits(node: etree._Element) -> Iterator[tuple[str, Edit]]:
    def remove(n: etree._Element) -> None:
        parent = n.getparent()
        if parent is not None:
            parent.remove(n)

    def duplicate(n: etree._Element) -> None:
        n.addnext(deepcopy(n))

    def empty(n: etree._Element) -> None:
        for child in list(n):
            n.remove(child)
        n.text = None

    def wrong_type(n: etree._Element) -> None:
        n.text = "-12.5e999 không-phải-giá-trị"

    def bad_base64(n: etree._Element) -> None:
        n.text = _truncated(n.text)

    def wrong_namespace(n: etree._Element) -> None:
        n.tag = f"{{{ELSEWHERE}}}{etree.QName(n).localname}"

    yield from {
        "remove": remove,
        "duplicate": duplicate,
        "empty": empty,
        "wrong type": wrong_type,
        "bad base64": bad_base64,
        "wrong namespace": wrong_namespace,
    }.items()


def _attribute_edits(name: str) -> Iterator[tuple[str, Edit]]:
    def remove(n: etree._Element) -> None:
        del n.attrib[name]

    def empty(n: etree._Element) -> None:
        n.set(name, "")

    def wrong_value(n: etree._Element) -> None:
        n.set(name, "urn:example:fuzz:not-an-algorithm#x")

    def wrong_namespace(n: etree._Element) -> None:
        value = n.attrib.pop(name)
        n.set(f"{{{ELSEWHERE}}}{etree.QName(name).localname}", value)

    yield from {
        "remove": remove,
        "empty": empty,
        "wrong value": wrong_value,
        "wrong namespace": wrong_namespace,
    }.items()


def mutations(root: etree._Element, top: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    """Each mutation of every element and attribute under ``top`` (``top`` included), applied
    to its own copy of ``root``."""
    for index, node in enumerate(_elements(top)):
        edits = [(f"{_path(node)}: {what}", edit) for what, edit in _element_edits(node)]
        for attribute in map(str, node.attrib):
            edits += [(f"{_path(node)}@{attribute}: {what}", e) for what, e in _attribute_edits(attribute)]
        for name, edit in edits:
            copy = deepcopy(root)
            target = _elements(_same(copy, root, top))[index]
            edit(target)
            yield name, copy


def _same(copy: etree._Element, root: etree._Element, node: etree._Element) -> etree._Element:
    """The element of ``copy`` at ``node``'s place in ``root``."""
    return _elements(copy)[_elements(root).index(node)]


def _header(root: etree._Element) -> etree._Element:
    found = [n for n in _elements(root) if etree.QName(n).localname == "edXMLHeader"]
    assert len(found) == 1
    return found[0]


def _signature(root: etree._Element) -> etree._Element:
    found = root.find(f".//{{{DS}}}Signature")
    assert found is not None
    return found


def _bytes(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def resigned(config: Config, root: etree._Element) -> bytes:
    """``root`` signed by the sender as it is now; unsigned if the sender's own tools refuse it."""
    try:
        return sign_package(config.certs, G22, root)
    except GatewayError:
        return _bytes(root)


def build_cases(config: Config) -> list[tuple[str, bytes, bool]]:
    """(name, package, may it be accepted) for every mutation; no-op mutations dropped."""
    original = make_package(config, G22, [A01], subject="Về việc kiểm thử chữ ký")
    signed = etree.fromstring(original)
    unsigned = deepcopy(signed)
    gone = _signature(unsigned)
    parent = gone.getparent()
    assert parent is not None
    parent.remove(gone)

    cases: dict[bytes, tuple[str, bool]] = {}
    for name, mutated in mutations(signed, _signature(signed)):
        cases.setdefault(_bytes(mutated), (f"signature after signing — {name}", False))
    for name, mutated in mutations(signed, _header(signed)):  # the signature's own cases come first
        cases.setdefault(_bytes(mutated), (f"header after signing — {name}", False))
    for name, mutated in mutations(unsigned, _header(unsigned)):
        cases.setdefault(resigned(config, mutated), (f"header, then signed — {name}", True))
    cases.pop(original, None)  # a mutation that changed nothing is the valid package itself
    return [(name, package, may_pass) for package, (name, may_pass) in cases.items()]


async def test_no_mutation_of_signature_or_header_yields_a_5xx(node: Node, config: Config, agency) -> None:
    cases = build_cases(config)
    assert 200 <= len(cases) <= MOST_CASES, len(cases)
    codes = client_codes()
    sender = agency(G22)
    wrong: list[str] = []
    accepted = 0

    async def one(name: str, package: bytes, may_pass: bool) -> None:
        nonlocal accepted
        status, body = await sender.send(package)
        if may_pass and 200 <= status < 300:
            accepted += 1
            return
        code = body.get("error") if isinstance(body, dict) else None
        if not (400 <= status < 500 and code in codes):
            wrong.append(f"{name}: {status} {code} {body!r:.200}")

    for start in range(0, len(cases), BATCH):
        await asyncio.gather(*(one(*case) for case in cases[start : start + BATCH]))
        status, health = await sender.call("GET", "/healthz")
        assert (status, health["status"]) == (200, "ok"), cases[start][0]

    assert wrong == [], "\n".join(wrong)
    # The valid package still goes through on the same server: the fuzzing broke nothing.
    status, body = await sender.send(make_package(config, G22, [A01], subject="Sau kiểm thử"))
    assert status == 202, body
    assert accepted < len(cases)
