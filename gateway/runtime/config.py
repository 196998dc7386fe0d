"""A node's configuration: ``gateway.toml`` in the home directory, with embedded defaults.

The home directory holds all state: ``gateway.toml``, ``registry.csv``,
``gateway.db`` (SQLite) and ``certs_dev/`` (the dev PKI; private keys 0600).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.domain.vocabulary import Network
from gateway.errors import ConfigError

CONFIG_FILE = "gateway.toml"
DEFAULT_PORT = 8443
DEFAULT_CARRIERS = min(4, os.cpu_count() or 1)

DEFAULT_CONFIG = f"""\
# edXML gateway node configuration. Paths are relative to this file's directory.
[gateway]
node = "local"                 # stable name of this node; claims of a crashed run are resumed by it
host = "127.0.0.1"             # loopback by default; agencies reach it over mutual TLS
port = {DEFAULT_PORT}
database = "sqlite:///gateway.db"
registry = "registry.csv"      # the agency registry; edit it and restart
certs = "certs_dev"            # dev PKI created by `gateway init`
max_package_bytes = 52428800   # 50 MiB
sqlite_synchronous = "FULL"    # FULL: an accepted document survives power loss, not only a crash
submit_rate = 100.0            # documents/s each agency may sustain (0: no limit); above: 429
submit_burst = 2000            # ... and how many it may send at once above that rate
carriers = {DEFAULT_CARRIERS}                   # processes that seal and verify (0: a thread)
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
    network: Network | None = None  # None: one node serves all three networks (embedded default)
    peers: Mapping[Network, str] = field(default_factory=dict)  # network -> https URL of its node
    give_up_after: float = 86_400.0  # seconds a route may wait for a peer before it is marked failed
    lease_seconds: float = 60.0  # how long a claim holds before another replica may take the work

    @property
    def database_url(self) -> str:
        """The database URL, SQLite paths made absolute (relative to the config file's folder)."""
        return _relative_sqlite(self.database, self.home)

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "::1", "localhost") else self.host
        return f"https://{host}:{self.port}"


def resolve_home(arg: str | None) -> Path:
    """``--home``, else ``$GATEWAY_HOME``, else the current directory."""
    return Path(arg or os.environ.get("GATEWAY_HOME") or ".").resolve()


KNOWN_SETTINGS = {
    "node", "host", "port", "database", "registry", "certs", "max_package_bytes", "sqlite_synchronous",
    "carriers", "submit_rate", "submit_burst", "network", "give_up_after", "lease_seconds",
}  # fmt: skip


def load_config(home: Path, path: Path | None = None) -> Config:
    """Read ``path`` (default ``home/gateway.toml``); relative paths in it are taken from its folder.

    A ``[peers]`` table maps each other network to the URL of its node (federation).
    """
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
            max_package_bytes=int(data.get("max_package_bytes", 50 * 1024 * 1024)),
            sqlite_synchronous=str(data.get("sqlite_synchronous", "FULL")).upper(),
            carriers=int(data.get("carriers", 0)),
            submit_rate=float(data.get("submit_rate", 100.0)),
            submit_burst=int(data.get("submit_burst", 2000)),
            network=network,
            peers=peer_urls,
            give_up_after=float(data.get("give_up_after", 86_400.0)),
            lease_seconds=float(data.get("lease_seconds", 60.0)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


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
