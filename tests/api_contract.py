"""The tests hold the server to its OpenAPI contract (gateway/http/openapi.json).

Every aiohttp session that the tests open on the agency API is made by ``contract_session``: its
responses validate themselves against the contract with openapi-core when their body is read (the
way every test reads them), so a response that drifts from the contract fails the test that
received it. Requests outside the contract (the console, /metrics) pass unchecked; that every
route of the API is in the contract is a test of its own (tests/test_openapi.py).
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_schema_validator import OAS31Validator
from werkzeug.datastructures import ImmutableMultiDict
from yarl import URL

from gateway.http.openapi import contract


@cache
def _openapi() -> OpenAPI:
    # Built once per test process: resolving the document is the slow part, checking is not.
    return OpenAPI.from_dict(contract())


# (method, path, status) of every answer checked against one of the contract's operations, in order:
# tests/test_openapi.py proves from it that each operation was met, and checked.
CHECKED: list[tuple[str, str, int]] = []


@dataclass
class CalledRequest:
    """What openapi-core needs to know of the request a response answers (its Request protocol)."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters = field(default_factory=RequestParameters)
    body: bytes | None = None
    content_type: str = ""


@dataclass(frozen=True)
class ReceivedResponse:
    """A response as received, for openapi-core (its Response protocol)."""

    status_code: int
    content_type: str
    headers: CIMultiDictProxy[str]
    data: bytes | None


class ContractViolation(AssertionError):
    """A response the contract does not allow (an AssertionError: it fails the test that got it)."""


def check(method: str, url: str, status: int, headers: CIMultiDictProxy[str], body: bytes) -> bool:
    """Validate one response; raises ``ContractViolation``. False if the request is not in the contract."""
    parsed = URL(url)
    request = CalledRequest(
        host_url=f"{parsed.scheme}://{parsed.host}:{parsed.port}",
        path=parsed.path,
        method=method.lower(),
        parameters=RequestParameters(query=ImmutableMultiDict(list(parsed.query.items()))),
    )
    content_type = headers.get("Content-Type", "").lower()
    response = ReceivedResponse(status, content_type, headers, body)
    try:
        _openapi().validate_response(request, response)
    except (PathNotFound, OperationNotFound):
        # No such route in the contract: a /v1 answer to it (404, 405) is still the contract's Error.
        if parsed.path.startswith("/v1/") and status >= 400:
            _check_error_body(method, parsed.path, status, content_type, body)
        return False
    except Exception as exc:  # openapi-core's errors: say which answer, and why, in the failure
        why = "; ".join(str(e) for e in _causes(exc))
        raise ContractViolation(
            f"{method} {parsed.path} answered {status} {content_type} outside the OpenAPI contract: {why}\n"
            f"body: {body[:400]!r}"
        ) from exc
    CHECKED.append((method.upper(), parsed.path, status))
    return True


def _check_error_body(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    if not content_type.startswith("application/json"):
        raise ContractViolation(
            f"{method} {path} answered {status} with {content_type!r}, not the Error body"
        )
    try:
        problems = [e.message for e in _error_schema().iter_errors(json.loads(body))]
    except ValueError as exc:
        problems = [f"not JSON: {exc}"]
    if problems:
        raise ContractViolation(f"{method} {path} answered {status} outside the contract's Error: {problems}")


@cache
def _error_schema() -> OAS31Validator:
    # The Error schema with the document's components beside it, so that its $refs resolve.
    doc = contract()
    return OAS31Validator({"$ref": "#/components/schemas/Error", "components": doc["components"]})


def _causes(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 5:
        chain.append(chain[-1].__cause__)
    schema_errors = getattr(chain[-1], "schema_errors", None) or []
    return [*chain, *schema_errors]


class ContractResponse(aiohttp.ClientResponse):
    """An aiohttp response that checks itself against the contract once its body is read."""

    _contract_checked = False

    async def read(self) -> bytes:
        body = await super().read()
        if not self._contract_checked:
            self._contract_checked = True
            check(self.method, str(self.url), self.status, self.headers, body)
        return body


def contract_session(ssl_context: ssl.SSLContext | bool, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session on the agency API whose responses are checked against the contract."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_context), response_class=ContractResponse, **kwargs
    )
