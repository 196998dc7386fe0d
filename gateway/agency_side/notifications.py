"""What an agency's system does with a push notification: check who signed it, then pull.

The gateway POSTs ``{"id", "kind", "priority", "sender", "recipient", "at", "status", "about"}``
with a detached JWS in the ``X-Gateway-Signature`` header, signed by the signing key of a network
adapter (``CN=ADAPTER.<NETWORK>``) whose certificate travels in the JWS header's ``x5c``. A
notification only says that something is waiting: fetch it with ``GET /v1/edocs/{id}``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from gateway.crypto.jws import verify_detached
from gateway.crypto.pki import CertIdentity, Role, TrustAnchors
from gateway.domain.vocabulary import adapter_code
from gateway.errors import CertificateRejected, SignatureInvalid
from gateway.exchange.notifications import SIGNATURE_HEADER

__all__ = ["SIGNATURE_HEADER", "verify_notification"]


def verify_notification(
    body: bytes, signature: str, anchors: TrustAnchors, *, agency: str, at: datetime | None = None
) -> dict[str, Any]:
    """The notification in ``body`` once its signature checks: made by a network adapter's signing
    certificate that chains to ``anchors`` and is valid ``at`` (default now), and addressed to
    ``agency``. Raises ``SignatureInvalid`` (or ``CertificateRejected``) otherwise."""
    moment = at or datetime.now(UTC)

    def adapter(cert: x509.Certificate) -> CertIdentity:
        identity = anchors.verify(cert, role=Role.SIGN, at=moment)
        if identity.code != adapter_code(identity.network):
            raise CertificateRejected(
                f"{identity.code} is not a network adapter: it may not sign notifications"
            )
        return identity

    verify_detached(signature, body, adapter)
    try:
        notification = json.loads(body)
    except ValueError as exc:
        raise SignatureInvalid("the notification body is not JSON") from exc
    if not isinstance(notification, dict) or notification.get("recipient") != agency:
        raise SignatureInvalid(f"the notification is not addressed to {agency}")
    return notification
