"""The agency API's OpenAPI 3.1 contract, kept as package data (``openapi.json`` beside this module).

The document is written by hand and is the reference an integrator builds against; the tests hold
the server to it (every response they receive is validated against it) and it to the error tree
(its ``ErrorCode`` enum is the set of codes ``gateway.errors`` defines).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def contract_bytes() -> bytes:
    """The document as shipped, byte for byte (read once)."""
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


def contract() -> dict[str, Any]:
    """The document parsed; a fresh copy each call, so a caller may change it."""
    loaded: dict[str, Any] = json.loads(contract_bytes())
    return loaded
