"""A node's configuration: ``gateway.toml`` in the home directory, with embedded defaults.

The home directory holds all state: ``gateway.toml``, ``registry.csv``,
``gateway.db`` (SQLite) and ``certs_dev/`` (the dev PKI; private keys 0600).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from gateway.domain.vocabulary import Network
from gateway.domain.xmlsafe import DEFAULT_LIMITS, XmlLimits
from gateway.errors import ConfigError

CONFIG_FILE = "gateway.toml"
DEFAULT_PORT = 8443
DEFAULT_CARRIERS = min(4, os.cpu_count() or 1)
DEFAULT_CHECKERS = min(4, os.cpu_count() or 1)

DEFAULT_CONFIG = f"""\
# edXML gateway node configuration. Paths are relative to this file's directory.
[gateway]
node = "local"                 # stable name of this node; claims of a crashed run are resumed by it
host = "127.0.0.1"             # loopback by default; agencies reach it over mutual TLS
port = {DEFAULT_PORT}
database = "sqlite:///gateway.db"
registry = "registry.csv"      # the agency registry; edit it and restart
certs = "certs_dev"            # dev PKI created by `gateway init`
max_package_bytes = 52428800   # 50 MiB; at most 209715200 (200 MiB)
max_upload_bytes_in_flight = 209715200  # bytes of uploads read at once (four 50 MiB packages);
                               # past it: 503 uploads_busy with Retry-After, nothing stored
sqlite_synchronous = "FULL"    # FULL: an accepted document survives power loss, not only a crash
submit_rate = 100.0            # documents/s each agency may sustain (0: no limit); above: 429
submit_burst = 2000            # ... and how many it may send at once above that rate
carriers = {DEFAULT_CARRIERS}                   # processes that seal and verify (0: a thread)
# The CPU work of a submission (parse, schema, signature; encryption) runs in checker processes,
# never on the event loop that answers everyone else.
submit_checkers = {DEFAULT_CHECKERS}            # checker processes: packages checked at once
submit_cpu_seconds = 5.0       # CPU seconds a checker may spend on one package (its check, and
                               # again its encryption); past it: 400 too_expensive, stored nothing
submit_memory_mb = 1024        # address space of one checker (a 47 MB package of attachments
                               # needs under 512); a package that needs more: 400 too_expensive
submit_queue = 64              # packages that may wait for a checker (one agency: half of them);
                               # past it: 503 checkers_busy with Retry-After
# Slow and noisy clients: a connection that stalls is closed, and no client can hold them all.
tls_handshake_timeout = 10.0   # seconds from connect to a finished TLS handshake
header_timeout = 20.0          # seconds from the handshake (or the last answer) to complete request
                               # headers; an idle keep-alive connection is closed after it too
body_timeout = 120.0           # seconds for the whole body once the headers are in; late: 408
max_connections = 2000         # open connections in total; above: 503 server_busy, closed
max_connections_per_client = 200  # open connections per client certificate (all connections
                               # without one share one such budget); above: 429, closed
# What one submitted package may hold (the hardened parser); past any: 400 forbidden_xml naming it.
# Only lower values are accepted: carrying, fetching and the agencies' own tools parse with these.
xml_max_depth = 64              # nesting of elements (real packages: about 8)
xml_max_elements = 100000       # in the whole document (3,000 recipients, encrypted: about 51,000)
xml_max_attributes_per_element = 32
xml_max_namespaces_per_element = 16  # xmlns declarations on one element
xml_max_namespaces = 64         # xmlns declarations in the whole document (real packages: 2-6)
xml_max_name_length = 256       # characters of an element's or attribute's local name
xml_max_prefix_length = 64
xml_max_namespace_uri_length = 512
# Push notifications to the endpoints agencies register (PUT /v1/notifications/endpoint).
notify_max_backoff = 300.0     # seconds at most between tries of an endpoint that is down
notify_give_up_after = 86400.0 # seconds after which an unsent notification is dropped (pull still works)
# notify_ca = "agency-ca.pem"  # more CAs to trust for the endpoints' certificates (besides the
                               # system's and trust.pem)
"""


@dataclass(frozen=True)
class Config:
    home: Path
    node: str = "local"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    database: str = "sqlite:///gateway.db"
    registry: Path = Path("registry.csv")
    certs: Path = Path("certs_dev")
    max_package_bytes: int = 50 * 1024 * 1024
    sqlite_synchronous: str = "FULL"
    carriers: int = 0
    submit_rate: float = 100.0
    submit_burst: int = 2000
    submit_checkers: int = DEFAULT_CHECKERS
    submit_cpu_seconds: float = 5.0  # the kernel counts a checker's CPU time, not the time it waits
    submit_memory_mb: int = 1024
    max_upload_bytes_in_flight: int = 4 * 50 * 1024 * 1024
    submit_queue: int = 64
    network: Network | None = None  # None: one node serves all three networks (embedded default)
    peers: Mapping[Network, str] = field(default_factory=dict)  # network -> https URL of its node
    give_up_after: float = 86_400.0  # seconds a route may wait for a peer before it is marked failed
    lease_seconds: float = 60.0  # how long a claim holds before another replica may take the work
    tls_handshake_timeout: float = 10.0
    header_timeout: float = 20.0  # also closes idle keep-alive connections (aiohttp's keepalive_timeout)
    body_timeout: float = 120.0
    max_connections: int = 2000
    max_connections_per_client: int = 200
    xml_limits: XmlLimits = DEFAULT_LIMITS  # what one submitted package may hold (``xml_*`` settings)
    notify_max_backoff: float = 300.0  # seconds at most between tries of a notification endpoint
    notify_give_up_after: float = 86_400.0  # an unsent notification is dropped after this
    notify_ca: Path | None = None  # extra CAs for the endpoints' server certificates

    @property
    def database_url(self) -> str:
        """The database URL, SQLite paths made absolute (relative to the config file's folder)."""
        return _relative_sqlite(self.database, self.home)

    @property
    def spool_dir(self) -> Path:
        """Where this node writes large request bodies while it handles them (owner-only files,
        removed when their request ends; left-overs of a killed run are removed at start). One
        folder per node name: replicas sharing a home never clear each other's."""
        return self.home / "spool" / re.sub(r"[^A-Za-z0-9._-]", "_", self.node)

    @property
    def url(self) -> str:
        # Loopback or every interface: from this machine it is localhost, the name the dev server
        # certificate carries.
        host = "localhost" if self.host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::") else self.host  # noqa: S104
        return f"https://{host}:{self.port}"


def resolve_home(arg: str | None) -> Path:
    """``--home``, else ``$GATEWAY_HOME``, else the current directory."""
    return Path(arg or os.environ.get("GATEWAY_HOME") or ".").resolve()


KNOWN_SETTINGS = {
    "node", "host", "port", "database", "registry", "certs", "max_package_bytes", "sqlite_synchronous",
    "max_upload_bytes_in_flight",
    "carriers", "submit_rate", "submit_burst", "network", "give_up_after", "lease_seconds",
    "submit_checkers", "submit_cpu_seconds", "submit_memory_mb", "submit_queue",
    "tls_handshake_timeout", "header_timeout", "body_timeout", "max_connections",
    "max_connections_per_client", "notify_max_backoff", "notify_give_up_after", "notify_ca",
    *(f"xml_{name}" for name in XmlLimits.__dataclass_fields__ if name != "max_bytes"),
}  # fmt: skip


def load_config(home: Path, path: Path | None = None) -> Config:
    """Read ``path`` (default ``home/gateway.toml``); relative paths in it are taken from its folder.

    A ``[peers]`` table maps each other network to the URL of its node (federation).
    """
    if path is not None and not path.exists():
        # `gateway init` writes only HOME/gateway.toml: a node config named by --config is the
        # operator's own file (README: One node per network), so init would not help.
        raise ConfigError(f"config file {path} (--config) not found; check its path (relative to here)")
    path = path or home / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{path} not found; run `gateway init` (with --home {home}) first")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    data, peers = document.get("gateway", {}), document.get("peers", {})
    unknown = set(data) - KNOWN_SETTINGS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    base = path.parent
    try:
        network = Network(data["network"]) if data.get("network") else None
        peer_urls = {Network(name): str(url).rstrip("/") for name, url in peers.items()}
        if network is not None and network in peer_urls:
            raise ConfigError(f"{path}: [peers] lists this node's own network {network}")
        return Config(
            home=home,
            node=str(data.get("node", "local")),
            host=str(data.get("host", "127.0.0.1")),
            port=int(data.get("port", DEFAULT_PORT)),
            database=database_url(str(data.get("database", "sqlite:///gateway.db")), base),
            registry=base / str(data.get("registry", "registry.csv")),
            certs=base / str(data.get("certs", "certs_dev")),
            max_package_bytes=_package_bytes(data),
            max_upload_bytes_in_flight=_positive(
                int, data, "max_upload_bytes_in_flight", 4 * _package_bytes(data)
            ),
            sqlite_synchronous=str(data.get("sqlite_synchronous", "FULL")).upper(),
            carriers=int(data.get("carriers", 0)),
            submit_rate=float(data.get("submit_rate", 100.0)),
            submit_burst=int(data.get("submit_burst", 2000)),
            submit_checkers=_positive(int, data, "submit_checkers", DEFAULT_CHECKERS),
            submit_cpu_seconds=_positive(float, data, "submit_cpu_seconds", 5.0),
            submit_memory_mb=_positive(int, data, "submit_memory_mb", _checker_memory_mb(data)),
            submit_queue=_positive(int, data, "submit_queue", 64),
            network=network,
            peers=peer_urls,
            give_up_after=float(data.get("give_up_after", 86_400.0)),
            lease_seconds=float(data.get("lease_seconds", 60.0)),
            tls_handshake_timeout=_positive(float, data, "tls_handshake_timeout", 10.0),
            header_timeout=_positive(float, data, "header_timeout", 20.0),
            body_timeout=_positive(float, data, "body_timeout", 120.0),
            max_connections=_positive(int, data, "max_connections", 2000),
            max_connections_per_client=_positive(int, data, "max_connections_per_client", 200),
            xml_limits=_xml_limits(data, _package_bytes(data)),
            notify_max_backoff=_positive(float, data, "notify_max_backoff", 300.0),
            notify_give_up_after=_positive(float, data, "notify_give_up_after", 86_400.0),
            notify_ca=base / str(data["notify_ca"]) if data.get("notify_ca") else None,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


_Number = TypeVar("_Number", int, float)
MAX_PACKAGE_BYTES_CEILING = 200 * 1024 * 1024


def _package_bytes(data: Mapping[str, object]) -> int:
    """``max_package_bytes``: 50 MiB unless set, and never above 200 MiB (a checker holds the
    package, its tree and libxmlsec1's canonical stream at once: about 4x the package)."""
    value = int(str(data.get("max_package_bytes", 50 * 1024 * 1024)))
    if not 0 < value <= MAX_PACKAGE_BYTES_CEILING:
        raise ValueError(
            f"max_package_bytes must be between 1 and {MAX_PACKAGE_BYTES_CEILING} (200 MiB), not {value}"
        )
    return value


def _checker_memory_mb(data: Mapping[str, object]) -> int:
    """The default address space of a checker: 1 GiB, or more when larger packages are allowed
    (about 6x the package plus the interpreter), so raising max_package_bytes alone is enough."""
    return max(1024, 6 * _package_bytes(data) // (1024 * 1024) + 512)


def _positive(kind: type[_Number], data: Mapping[str, object], name: str, default: _Number) -> _Number:
    """A timeout or cap (of the HTTP edge, of the package checkers): it must be above 0 (a zero
    would close every connection at once, or let none in)."""
    value = kind(str(data.get(name, default)))
    if not value > 0:
        raise ValueError(f"{name} must be greater than 0, not {value}")
    return value


def _xml_limits(data: Mapping[str, object], max_bytes: int) -> XmlLimits:
    """The ``xml_*`` settings as the intake's parser limits. Each may only lower the built-in
    value: what the intake accepts is parsed again by the courier, the mailbox and the agencies'
    own tools with the built-in limits, so a higher one would accept packages nobody can carry."""
    found: dict[str, int] = {}
    for name in XmlLimits.__dataclass_fields__:
        if name == "max_bytes" or f"xml_{name}" not in data:
            continue
        value, ceiling = data[f"xml_{name}"], getattr(DEFAULT_LIMITS, name)
        if type(value) is not int or not 0 < value <= ceiling:
            raise ValueError(f"xml_{name} must be a whole number from 1 to {ceiling}, not {value!r}")
        found[name] = value
    return XmlLimits(max_bytes=max_bytes, **found)


def database_url(url: str, base: Path) -> str:
    """``url`` checked and written the way the store opens it: SQLite (a relative file taken from
    ``base``), or PostgreSQL through psycopg 3 (``postgresql://`` and ``postgresql+asyncpg://`` name
    the same server; the store's driver is psycopg, so both are opened with it). Anything else is
    refused with what would work."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise ConfigError(f"database {url!r} is not a URL; use sqlite:///FILE or postgresql://USER@HOST/DB")
    if scheme == "sqlite":
        return _relative_sqlite(url, base)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg"):
        return "postgresql+psycopg://" + rest
    raise ConfigError(f"database {url!r}: only sqlite:///FILE and postgresql://USER@HOST/DB are supported")


def _relative_sqlite(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        return prefix + str(base / url[len(prefix) :])
    return url
