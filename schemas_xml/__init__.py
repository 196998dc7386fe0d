"""XML Schemas of edXML packages (QCVN 102:2016) and of the gateway's sealed transfers.

``edxml.xsd`` and ``gateway.xsd`` import each other (each needs the other's
elements), so either schema holds the declarations of both namespaces.
"""

from __future__ import annotations

import functools
import threading
from importlib import resources

from lxml import etree

EDXML_NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
GATEWAY_NS = "urn:vn:gov:edxml-gateway:1"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
XENC_NS = "http://www.w3.org/2001/04/xmlenc#"

__all__ = ["DSIG_NS", "EDXML_NS", "GATEWAY_NS", "XENC_NS", "package_schema", "transfer_schema"]

# functools.cache alone would let two threads build the same schema at once.
_lock = threading.Lock()


@functools.cache
def _load(filename: str) -> etree.XMLSchema:
    # Our own files, but parsed like anything else: no DTD, no entities, no network.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    # Parsing from a real path gives the document a base URL, so libxml2 finds the
    # sibling file named by xs:import (relative schemaLocation) without any network.
    with resources.as_file(resources.files(__name__).joinpath(filename)) as path:
        document = etree.parse(str(path), parser)
        return etree.XMLSchema(document)


def package_schema() -> etree.XMLSchema:
    """The schema of edXML packages (edoc and status), from ``edxml.xsd``."""
    with _lock:
        return _load("edxml.xsd")


def transfer_schema() -> etree.XMLSchema:
    """The schema of sealed transfers (``gw:Transfer``), from ``gateway.xsd``."""
    with _lock:
        return _load("gateway.xsd")
