"""Links to the peer nodes of the other networks: HTTPS with mutual TLS, authenticated on both
sides by the network adapters' TLS certificates.

A link that cannot be reached is reported as ``PeerUnavailable`` (the courier backs off and
keeps the document); a peer that answers 4xx refused the transfer itself (``DeliveryError``).
Only a 2xx means the peer has the transfer durably stored.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp

from gateway.crypto.pki import Role
from gateway.domain.transfer import framing
from gateway.domain.vocabulary import Network
from gateway.errors import DeliveryError, PeerUnavailable
from gateway.exchange.ports import StoredPackage
from gateway.infra.files.pki_dir import adapter_paths

TRANSFER_PATH = "/v1/transfers"


class PeerLinks:
    """One HTTPS session per peer node, presenting this network's adapter TLS certificate."""

    def __init__(
        self, network: Network, peers: Mapping[Network, str], certs_dir: Path, *, timeout: float = 30.0
    ) -> None:
        crt, key = adapter_paths(certs_dir, network, Role.TLS)
        self._ctx = ssl.create_default_context(cafile=str(certs_dir / "trust.pem"))
        self._ctx.load_cert_chain(str(crt), str(key))
        self._peers = dict(peers)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def knows(self, network: Network) -> bool:
        return network in self._peers

    async def send(self, network: Network, sealed: bytes, package: StoredPackage) -> None:
        """Hand a sealed transfer header and its package to ``network``'s node, framed as one
        multipart body (``gateway.domain.transfer.framing``), the package streamed from the store
        a part at a time; returns once it is durably stored there. A failed hand-over is retried
        whole: the peer keeps nothing of a partial body."""
        url = self._peers.get(network)
        if url is None:
            raise DeliveryError(f"no peer node is configured for the {network} network")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ctx, limit=8), timeout=self._timeout
            )
        framed = framing(sealed, package.size)

        async def framed_body() -> AsyncIterator[bytes]:
            yield framed.head
            async for piece in package.pieces():
                yield piece
            yield framed.tail

        try:
            async with self._session.post(
                # An async generator with a known length: aiohttp sends each piece as it is read
                # (a Content-Length, not chunked), so the package is never whole in this node.
                url + TRANSFER_PATH,
                data=framed_body(),
                headers={
                    "Content-Type": framed.content_type,
                    "Content-Length": str(framed.length(package.size)),
                },
            ) as response:
                body = await response.text()
                if response.status >= 500:
                    raise PeerUnavailable(f"the {network} node answered {response.status}")
                if response.status >= 400:
                    raise DeliveryError(
                        f"the {network} node refused the transfer ({response.status}): {body[:300]}"
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerUnavailable(
                f"the {network} node at {url} is unreachable: {exc.__class__.__name__}"
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
