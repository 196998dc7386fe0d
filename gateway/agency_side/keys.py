"""What an agency's document system holds to talk to the gateway: its code and network, its TLS
and signing pairs, its decryption keys, and the trust it checks deliveries against.

Read from a dev PKI directory (the layout of ``gateway.infra.files.pki_dir``). Before any file
is opened, the agency is looked up in the registry and its certificates in the inventory, so a
mistake says what is wrong ("not in the registry", "revoked on ... by ...") and what to do,
instead of naming a missing file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptography import x509
from lxml import etree

from gateway.adapters.ports import Trust
from gateway.agency_side.packages import decryption_keys, sign_package
from gateway.crypto.pki import PrivateKey, Role
from gateway.domain.agencies import AgencyCode, Registry
from gateway.domain.edxml import Organ
from gateway.domain.vocabulary import Network
from gateway.errors import CertificateRejected, ConfigError
from gateway.infra.files.keys import file_trust
from gateway.infra.files.pki_dir import agency_paths, read_inventory, trust_path
from gateway.infra.files.registry_csv import load_registry
from gateway.pki.inventory import Slot

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")


@dataclass(frozen=True)
class AgencyKeys:
    """One agency's credentials in a dev PKI directory, checked against the registry.

    Build it with ``AgencyKeys.from_dev_pki``; ``AgencyClient`` reads the files when it needs
    them (a rotation between two calls is picked up)."""

    code: str
    network: Network
    certs_dir: Path
    trust: Trust  # judges the adapter's seal and the sender's signature on what is fetched
    registry: Registry | None = field(default=None, repr=False, compare=False)  # names for From/To

    @classmethod
    def from_dev_pki(cls, certs_dir: Path, code: str, registry: Registry | Path) -> AgencyKeys:
        """Agency ``code``'s keys under ``certs_dir``; ``registry`` is the agency registry (or its
        CSV file). Raises ``ConfigError`` for an agency the registry does not know or that is
        retired, ``CertificateRejected`` when its TLS or signing certificate was revoked."""
        agencies = load_registry(registry) if isinstance(registry, Path) else registry
        value = AgencyCode.parse(code).value
        agency = agencies.get(value)
        if agency is None:
            raise ConfigError(
                f"agency {value} is not in the registry; see `gateway agencies list` for the codes, "
                "or add it to registry.csv and run `gateway init`"
            )
        if agency.state != "active":
            successor = f"; its successor is {agency.successor}" if agency.successor else ""
            raise ConfigError(f"agency {value} is retired{successor}: it can no longer send or fetch")
        for role in (Role.TLS, Role.SIGN):
            _require(certs_dir, value, role)
        return cls(value, agency.network, certs_dir, file_trust(certs_dir, agencies), agencies)

    @property
    def tls_pair(self) -> tuple[Path, Path]:
        """(certificate chain, key) this agency presents in the TLS handshake."""
        return agency_paths(self.certs_dir, self.code, Role.TLS)

    @property
    def ca_file(self) -> Path:
        """The CAs the gateway's server certificate must chain to."""
        return trust_path(self.certs_dir)

    def organ(self, code: str) -> Organ:
        """``code`` with its name from the registry, as From and To carry it (no name if unknown)."""
        agency = self.registry.get(code) if self.registry is not None else None
        return Organ(code, agency.name if agency is not None else "")

    def sign(self, root: etree._Element) -> bytes:
        """``root`` (an edXML package) signed with this agency's signing key."""
        return sign_package(self.certs_dir, self.code, root)

    def decryption_keys(self) -> Sequence[tuple[PrivateKey, x509.Certificate]]:
        """The current encryption key, then every retired one kept (for documents sent before a rotation)."""
        return decryption_keys(self.certs_dir, self.code)


def _require(certs_dir: Path, code: str, role: Role) -> None:
    """The agency's active ``role`` certificate is there, or an error saying why it is not."""
    crt, _ = agency_paths(certs_dir, code, role)
    if crt.exists():
        return
    what = "signing" if role is Role.SIGN else role.value.upper()
    issue = f"gateway certs issue --agency {code} --role {role.value}"
    inventory = read_inventory(certs_dir)
    revoked = [r for r in inventory if (r.owner, r.role) == (code, role) and r.revocation is not None]
    if revoked and inventory.holding(code, role, Slot.ACTIVE) is None:
        last = revoked[-1]
        rev = last.revocation
        assert rev is not None
        raise CertificateRejected(
            f"the {what} certificate {last.serial} of agency {code} was revoked on "
            f"{rev.at.astimezone(VIETNAM):%Y-%m-%d %H:%M} (Vietnam time) "
            f"by {rev.by} ({rev.reason}); a security officer issues a new one: {issue}"
        )
    raise ConfigError(f"agency {code} has no {what} certificate in {certs_dir}; issue one: {issue}")
