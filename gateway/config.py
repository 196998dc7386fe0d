"""A node's configuration: ``gateway.toml`` in the home directory, with embedded defaults.

The home directory holds all state: ``gateway.toml``, ``registry.csv``,
``gateway.db`` (SQLite) and ``certs_dev/`` (the dev PKI; private keys 0600).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def database_url(self) -> str:
        """SQLite paths are taken relative to the home directory."""
        prefix = "sqlite:///"
        if self.database.startswith(prefix) and not self.database[len(prefix) :].startswith("/"):
            return prefix + str(self.home / self.database[len(prefix) :])
        return self.database

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "::1", "localhost") else self.host
        return f"https://{host}:{self.port}"


def resolve_home(arg: str | None) -> Path:
    """``--home``, else ``$GATEWAY_HOME``, else the current directory."""
    return Path(arg or os.environ.get("GATEWAY_HOME") or ".").resolve()


def load_config(home: Path) -> Config:
    path = home / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{path} not found; run `gateway init` (with --home {home}) first")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")).get("gateway", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    known = {
        "node",
        "host",
        "port",
        "database",
        "registry",
        "certs",
        "max_package_bytes",
        "sqlite_synchronous",
        "carriers",
        "submit_rate",
        "submit_burst",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    try:
        return Config(
            home=home,
            node=str(data.get("node", "local")),
            host=str(data.get("host", "127.0.0.1")),
            port=int(data.get("port", DEFAULT_PORT)),
            database=str(data.get("database", "sqlite:///gateway.db")),
            registry=home / str(data.get("registry", "registry.csv")),
            certs=home / str(data.get("certs", "certs_dev")),
            max_package_bytes=int(data.get("max_package_bytes", 50 * 1024 * 1024)),
            sqlite_synchronous=str(data.get("sqlite_synchronous", "FULL")).upper(),
            carriers=int(data.get("carriers", 0)),
            submit_rate=float(data.get("submit_rate", 100.0)),
            submit_burst=int(data.get("submit_burst", 2000)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
