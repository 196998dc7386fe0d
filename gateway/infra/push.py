"""Push notifications out: HTTPS POSTs to the agencies' endpoints over mutual TLS.

The client certificate is the TLS certificate of the adapter of the recipient's network (the
same one a peer node sees), so an agency's endpoint can tell the gateway from anyone else by
its certificate alone. The endpoint's own certificate is checked against the system's CAs, the
gateway's trust anchors (``trust.pem``) and, if configured, ``notify_ca``, with its host name.
Redirects are not followed; anything but a 2xx is ``PushFailed`` and the notification is retried.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

import aiohttp

from gateway.crypto.pki import Role
from gateway.domain.vocabulary import Network
from gateway.errors import PushFailed
from gateway.exchange.notifications import SIGNATURE_HEADER
from gateway.infra.files.pki_dir import adapter_paths


class PushLinks:
    """One HTTPS session per network whose adapter signs and presents the notifications."""

    def __init__(
        self,
        certs_dir: Path,
        networks: Iterable[Network],
        *,
        extra_ca: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._contexts: dict[Network, ssl.SSLContext] = {}
        for network in networks:
            ctx = ssl.create_default_context()  # the system's CAs, host names checked
            ctx.load_verify_locations(cafile=str(certs_dir / "trust.pem"))
            if extra_ca is not None:
                ctx.load_verify_locations(cafile=str(extra_ca))
            crt, key = adapter_paths(certs_dir, network, Role.TLS)
            ctx.load_cert_chain(str(crt), str(key))
            self._contexts[network] = ctx
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sessions: dict[Network, aiohttp.ClientSession] = {}

    def _session(self, network: Network) -> aiohttp.ClientSession:
        session = self._sessions.get(network)
        if session is None:
            ctx = self._contexts.get(network)
            if ctx is None:
                raise PushFailed(f"this node holds no TLS certificate of the {network} adapter")
            session = self._sessions[network] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=32, limit_per_host=4), timeout=self._timeout
            )
        return session

    async def push(self, network: Network, url: str, body: bytes, signature: str) -> int:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
        try:
            async with self._session(network).post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                response.release()  # what the endpoint says is not read: only its status counts
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PushFailed(f"unreachable: {exc.__class__.__name__}") from exc
        if not 200 <= status < 300:
            raise PushFailed(f"the endpoint answered {status}")
        return status

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
