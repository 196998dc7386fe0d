"""Namespaces, element names and the two shapes of an edXML package.

Real packages on the national axis are rooted at ``edXML`` (the envelope, with
``AttachmentEncoded`` beside it, as the VXP SDKs write them); a package may also be rooted at its
``edXMLEnvelope`` (attachments inside ``edXMLBody``). Both mean the same; the functions here find
the parts of either, so nothing else needs to know which one it holds.
"""

from __future__ import annotations

import functools

from lxml import etree

import schemas_xml
from gateway.errors import SchemaInvalid

NS = schemas_xml.EDXML_NS
GW = schemas_xml.GATEWAY_NS
DS = schemas_xml.DSIG_NS
NSMAP = {"edXML": NS, "gw": GW}


@functools.cache
def q(tag: str, ns: str = NS) -> str:
    """Clark-notation name of an element in the edXML namespace (or ``ns``)."""
    return f"{{{ns}}}{tag}"


def value_of(node: etree._Element) -> str:
    """A simple element's value as the schema saw it (a comment inside is not part of it)."""
    if len(node) == 0:
        return node.text or ""
    return "".join(str(text) for text in node.itertext())


ROOT = q("edXML")
ENVELOPE = q("edXMLEnvelope")


def shown(tag: str) -> str:
    """How a message names an element: ``edXML:From``, ``gw:Classification``."""
    for prefix, ns in (("edXML", NS), ("gw", GW), ("ds", DS)):
        if tag.startswith(f"{{{ns}}}"):
            return f"{prefix}:{tag[len(ns) + 2 :]}"
    return tag


def envelope_of(root: etree._Element) -> etree._Element:
    """The ``edXMLEnvelope`` of a package of either shape."""
    if root.tag == ENVELOPE:
        return root
    if root.tag == ROOT:
        envelope = root.find(ENVELOPE)
        if envelope is not None:
            return envelope
        raise SchemaInvalid("the edXML root holds no edXML:edXMLEnvelope")
    raise SchemaInvalid(
        f"the root element must be edXML (as the VXP SDKs write it) or edXML:edXMLEnvelope, in namespace {NS}"
    )


def header_of(root: etree._Element) -> etree._Element:
    """The ``edXMLHeader`` of a package of either shape (where its signature goes)."""
    header = envelope_of(root).find(q("edXMLHeader"))
    if header is None:
        raise SchemaInvalid("the package has no edXML:edXMLHeader")
    return header


def attachments_parent(root: etree._Element) -> etree._Element | None:
    """The ``AttachmentEncoded`` of a package: the root's child (edXML) or the body's (edXMLEnvelope)."""
    if root.tag == ROOT:
        return root.find(q("AttachmentEncoded"))
    return envelope_of(root).find(f"{q('edXMLBody')}/{q('AttachmentEncoded')}")


def signature_location(root: etree._Element) -> str:
    """Where the sender's ``ds:Signature`` must be, as the ElementPath prefix the verifier pins:
    the last child of ``edXMLHeader``, one level deeper in a package rooted at ``edXML``."""
    if root.tag == ROOT:
        return f"./{ENVELOPE}/{q('edXMLHeader')}/"
    return f"./{q('edXMLHeader')}/"


def legacy_signature_only(root: etree._Element) -> bool:
    """Whether the package's only signature is the SDKs' legacy ``<Signature>`` in the QCVN
    namespace (a constant value over RSA-SHA1, which proves nothing), with no XMLDSig beside it."""
    try:
        header = header_of(root)
    except SchemaInvalid:
        return False
    return header.find(q("Signature")) is not None and header.find(q("Signature", DS)) is None


LEGACY_SIGNATURE_ONLY = (
    "the package carries only the SDK's own <Signature> in the QCVN namespace, which is not an XML "
    "signature (its value is a constant, over RSA-SHA1) and proves nothing; sign the package with "
    'XMLDSig (ds:Signature, RSA-SHA256 or ECDSA-SHA256, SHA-256 digests, one Reference URI="" with '
    "the enveloped-signature transform) as the last child of edXMLHeader. The SDK's element may stay "
    "beside it: it is carried, never read"
)
