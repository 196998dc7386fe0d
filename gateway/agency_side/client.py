"""A small synchronous mTLS client for the v1 API, as an agency's document system would use it.

Used by the CLI; tests and benchmarks use aiohttp directly.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.domain.vocabulary import Classification
from gateway.errors import GatewayError, RemoteError


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class AgencyClient:
    def __init__(
        self, base_url: str, *, cert_chain: Path, key: Path, trust: Path, timeout: float = 60
    ) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 443
        self._base = base_url
        self._timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(trust))
        self._ctx.load_cert_chain(str(cert_chain), str(key))

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "", **headers: str
    ) -> Reply:
        conn = http.client.HTTPSConnection(self._host, self._port, context=self._ctx, timeout=self._timeout)
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            reply = Reply(response.status, response.getheader("Content-Type", ""), response.read())
        except ConnectionRefusedError as exc:
            raise GatewayError(
                f"cannot reach the gateway at {self._base}: connection refused (is it running?)"
            ) from exc
        except ssl.SSLError as exc:
            raise GatewayError(f"TLS with the gateway at {self._base} failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise GatewayError(f"cannot reach the gateway at {self._base}: {exc}") from exc
        finally:
            conn.close()
        if reply.status >= 400:
            try:
                err = reply.json()
                raise RemoteError(reply.status, str(err.get("error")), str(err.get("message")))
            except (ValueError, AttributeError):
                raise RemoteError(
                    reply.status, "http_error", reply.body[:200].decode(errors="replace")
                ) from None
        return reply

    def get_json(self, path: str) -> Any:
        return self.request("GET", path).json()

    def post_xml(self, path: str, package: bytes, *, classification: Classification | None = None) -> Any:
        """POST a package; ``classification`` goes in the X-Classification routing header."""
        extra = {"X_Classification": classification.slug} if classification else {}
        return self.request("POST", path, package, "application/xml; charset=utf-8", **extra).json()
