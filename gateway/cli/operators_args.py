"""``gateway trace``, ``gateway audit`` and ``gateway operator``: what an operator types on the node.

They read this node's database directly (like the console, not through the agency API).
``gateway audit verify --file F --trust trust.pem`` needs neither a database nor a home: it is
what an auditor runs on an export, offline. ``register``/``run`` plug into ``gateway.cli.entry``;
this module stays light (every ``gateway`` process, carrier workers included, imports it) and
``gateway.cli.operators`` does the work.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.cli.certs_args import OPERATOR_DAYS_SAID
from gateway.domain.vocabulary import DeliveryState

if TYPE_CHECKING:
    from gateway.runtime.config import Config

COMMANDS = ("trace", "audit", "operator")


def register(subparsers: Any) -> None:
    """Add ``trace``, ``audit`` and ``operator`` to ``gateway``'s subcommands."""
    trace = subparsers.add_parser(
        "trace", help="a document's timeline, or the documents of one agency, from this node's database"
    )
    trace.add_argument("id", nargs="?", help="the document's id (from the 202 answer)")
    trace.add_argument("--agency", metavar="CODE", help="list the documents this agency sent or received")
    trace.add_argument("--since", metavar="WHEN", default="24h", help="2h, 30m, 7d or a date (default: 24h)")
    trace.add_argument("--until", metavar="WHEN")
    states = [s.value for s in DeliveryState]
    trace.add_argument(
        "--state", choices=states, help="only deliveries in this state (failed: also quarantined)"
    )
    trace.add_argument(
        "--overdue",
        action="store_true",
        help="deliveries overdue or due within 2 hours, not yet fetched or answered 03 (with ID or "
        "--agency: of that document, or to that agency)",
    )
    trace.add_argument("--limit", type=int, default=100)
    trace.add_argument("--before", metavar="ID", help="older than this document (the next page)")
    trace.add_argument("--json", action="store_true")

    audit = subparsers.add_parser("audit", help="verify, export and sign the tamper-evident delivery log")
    sub = audit.add_subparsers(dest="audit_action", required=True, parser_class=type(audit))
    verify = sub.add_parser("verify", help="check the chain and its signed heads; name the first bad record")
    verify.add_argument("--from", dest="since", metavar="DATE", help="start at the first record at DATE")
    verify.add_argument("--file", metavar="FILE", help="check an export offline instead of the database")
    verify.add_argument("--trust", metavar="PEM", help="trust anchors for --file (the exported trust.pem)")
    verify.add_argument("--json", action="store_true")
    export = sub.add_parser("export", help="records and signed heads of a period, verifiable offline")
    export.add_argument("--from", dest="since", metavar="DATE", required=True)
    export.add_argument("--to", dest="until", metavar="DATE", help="default: now")
    export.add_argument("-o", "--output", metavar="FILE", required=True)
    sub.add_parser("sign", help="sign the head of the log now (the node does it every minute and at stop)")

    operator = subparsers.add_parser(
        "operator", help="operators' certificates for the web console and /metrics"
    )
    op_sub = operator.add_subparsers(dest="operator_action", required=True, parser_class=type(operator))
    issue = op_sub.add_parser("issue", help="issue a TLS client certificate CN=OPERATOR.<NAME>")
    issue.add_argument("name")
    issue.add_argument(
        "--days", metavar="N", help=f"default: {OPERATOR_DAYS_SAID} (as `gateway certs issue --operator`)"
    )


def run(args: argparse.Namespace, config: Callable[[], Config]) -> int:
    """Run one command; ``config`` loads the node's configuration when the command needs it."""
    from gateway.cli import operators as commands

    if args.command == "trace":
        return commands.trace(config(), args)
    if args.command == "operator":
        return commands.issue_operator(config(), args)
    if args.audit_action == "verify" and args.file:
        return commands.verify_file(args)
    handler = {"verify": commands.verify_db, "export": commands.export, "sign": commands.sign}[
        args.audit_action
    ]
    return handler(config(), args)
