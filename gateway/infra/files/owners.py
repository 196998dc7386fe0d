"""Who holds leaf certificates in the dev PKI (an agency, a network adapter, the gateway's HTTPS
server), named as an officer types them, and where each one's files are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.crypto.pki import Role
from gateway.domain.agencies import AgencyCode, Registry
from gateway.domain.vocabulary import Network, adapter_code
from gateway.errors import BadRequest, NotFound
from gateway.infra.files.pki_dir import (
    ADAPTER_ROLES,
    AGENCY_ROLES,
    SERVER_CODE,
    SERVER_NETWORK,
    adapter_paths,
    agency_paths,
    server_paths,
)
from gateway.pki.inventory import OwnerKind


@dataclass(frozen=True)
class Owner:
    """Who holds leaf certificates: an agency, a network adapter, or the gateway's HTTPS server."""

    code: str
    kind: OwnerKind
    network: Network
    name: str
    roles: tuple[Role, ...]

    def paths(self, certs_dir: Path, role: Role) -> tuple[Path, Path]:
        if role not in self.roles:
            have = ", ".join(r.value for r in self.roles)
            raise BadRequest(f"{self.code} has no {role.value} certificate (its roles: {have})")
        if self.kind is OwnerKind.ADAPTER:
            return adapter_paths(certs_dir, self.network, role)
        if self.kind is OwnerKind.SERVER:
            return server_paths(certs_dir)
        return agency_paths(certs_dir, self.code, role)


def find_owner(code: str, registry: Registry) -> Owner:
    """``ADAPTER.PARTY`` (…GOVERNMENT, …FRONT), ``gateway`` (the HTTPS server) or an active agency."""
    text = code.strip()
    for network in Network:
        if text.upper() == adapter_code(network):
            return Owner(
                adapter_code(network), OwnerKind.ADAPTER, network, f"Adapter {network.value}", ADAPTER_ROLES
            )
    if text.lower() == SERVER_CODE:
        return Owner(SERVER_CODE, OwnerKind.SERVER, SERVER_NETWORK, "edXML gateway", (Role.TLS,))
    if text.upper().startswith("ADAPTER."):
        known = ", ".join(adapter_code(n) for n in Network)
        raise BadRequest(f"no network adapter {text!r}; the adapters are {known}")
    agency = registry.get(AgencyCode.parse(text).value)
    if agency is None:
        raise NotFound(f"no agency {text} in the registry")
    if not agency.active:
        raise BadRequest(
            f"agency {agency.code} is retired (successor {agency.successor or '-'}); "
            "it gets no new certificates"
        )
    return Owner(agency.code, OwnerKind.AGENCY, agency.network, agency.name, AGENCY_ROLES)
