"""``gateway certs …``: what a security officer types to issue, rotate, revoke and check certificates.

Runs as the local operator with direct access to the home directory, like ``gateway trace``;
every change is written to the certificate inventory (which a running gateway watches: no
restart) and to the delivery log, with the operator's name (``--by``, default ``$USER``).
``register``/``run`` plug into ``gateway.cli.entry``. This module only parses, and stays light (every
``gateway`` process imports it); ``gateway.cli.certs`` does the work.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.runtime.config import Config

# The values of gateway.crypto.pki.Role and KeyType, spelt out so that parsing a command line does
# not load the crypto stack (tests/test_certs.py checks they agree).
ROLE_CHOICES = ("tls", "sign", "encrypt")
KEY_CHOICES = ("rsa2048", "rsa3072", "p256")
# The default validity in days of gateway.infra.files.pki_init.LEAF_DAYS (agencies, adapters, the
# server) and gateway.pki.inventory.OPERATOR_DAYS, for --help only (the commands use those).
LEAF_DAYS_SAID, OPERATOR_DAYS_SAID = 825, 365


def register(subparsers: Any) -> None:
    """Add ``certs`` and its commands to ``gateway``'s subcommands."""
    certs = subparsers.add_parser(
        "certs", help="issue, rotate, revoke and check certificates (security officers)"
    )
    sub = certs.add_subparsers(dest="certs_action", required=True, parser_class=type(certs))

    listing = sub.add_parser("list", help="every certificate with role, serial, fingerprint, validity, state")
    listing.add_argument("--agency", metavar="CODE", help="an agency, ADAPTER.<NETWORK>, or gateway")
    listing.add_argument(
        "--expiring-within", metavar="DAYS", help="only those in use that expire within DAYS"
    )
    listing.add_argument("--json", action="store_true")

    issue = sub.add_parser("issue", help="issue a certificate (active, or next if one is active)")
    whom = issue.add_mutually_exclusive_group(required=True)
    whom.add_argument("--agency", metavar="CODE", help="an agency, ADAPTER.<NETWORK>, or gateway")
    whom.add_argument(
        "--operator", metavar="NAME", help="an operator's TLS client certificate for /console and /metrics"
    )
    issue.add_argument("--role", choices=ROLE_CHOICES, help="required with --agency; tls for an operator")
    issue.add_argument("--key", choices=list(KEY_CHOICES), default="p256")
    issue.add_argument(
        "--days",
        metavar="N",
        help=f"default: {LEAF_DAYS_SAID} (agency, adapter, gateway), {OPERATOR_DAYS_SAID} (operator)",
    )
    _common(issue)

    rotate = sub.add_parser(
        "rotate", help="make a successor active; the predecessor stays valid for the overlap"
    )
    rotate.add_argument("--agency", required=True, metavar="CODE")
    rotate.add_argument("--role", action="append", choices=ROLE_CHOICES, help="default: every role it holds")
    rotate.add_argument("--overlap", metavar="HOURS", default="24")
    rotate.add_argument("--key", choices=list(KEY_CHOICES), help="default: the predecessor's")
    rotate.add_argument("--days", metavar="N")
    _common(rotate)

    revoke = sub.add_parser("revoke", help="revoke a certificate at once")
    revoke.add_argument("serial", help="hex serial, or its first 8+ digits")
    revoke.add_argument("--reason", required=True)
    _common(revoke)

    check = sub.add_parser("check", help="exit 1 naming each certificate that expires soon or is broken")
    check.add_argument("--within", metavar="DAYS", default="30")
    _common(check)

    export = sub.add_parser(
        "export-ca", help="the trust anchors as PEM, for agency systems and other gateways"
    )
    export.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    export.add_argument("--json", action="store_true")

    log = sub.add_parser("log", help="certificate events from the delivery log")
    log.add_argument("--agency", metavar="CODE")
    log.add_argument("--serial")
    log.add_argument("--json", action="store_true")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", metavar="NAME", help="the operator to record (default: $USER)")
    parser.add_argument("--json", action="store_true")


def run(config: Config, args: argparse.Namespace) -> int:
    """Run one ``certs`` command; errors are ``GatewayError`` (one line, said by the caller)."""
    from gateway.cli import certs as certs_commands

    return certs_commands.run(config, args)
