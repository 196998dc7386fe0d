"""The ``gateway`` command: operators run and inspect a node; agency commands go through the mTLS API.

Every mistake ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from gateway.cli import certs_args as certs_cli
from gateway.cli import operators_args as oversight_cli
from gateway.domain.vocabulary import Network
from gateway.errors import GatewayError, UsageError
from gateway.runtime.config import database_url, load_config, resolve_home

EXIT_ERROR, EXIT_USAGE = 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a command ended by SIGPIPE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the user asked for `--help` if they want it.
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gateway", description="Secure edXML document-exchange gateway")
    p.add_argument(
        "--home", help="directory holding all state (default: $GATEWAY_HOME or the current directory)"
    )
    p.add_argument("--config", help="configuration file (default: HOME/gateway.toml)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("init", help="create config, demo registry and dev PKI (safe to run twice)")
    serve = sub.add_parser("serve", help="run the gateway node")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-format", choices=["json", "text"], default="json", help="default: JSON lines")
    serve.add_argument(
        "--network", choices=["party", "government", "front"], help="run as the node of this network only"
    )
    _database_option(serve)

    agencies = sub.add_parser("agencies", help="read the agency registry")
    agencies_sub = agencies.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = agencies_sub.add_parser("list")
    listing.add_argument("--network", choices=["party", "government", "front"])
    listing.add_argument("--json", action="store_true")
    show = agencies_sub.add_parser("show")
    show.add_argument("code")
    show.add_argument("--json", action="store_true")

    send = sub.add_parser("send", help="sign and send a document as an agency")
    send.add_argument("--as", dest="agency", required=True, metavar="CODE")
    _url_option(send)
    send.add_argument("file", nargs="?", help="an edXML package to sign (if unsigned) and send")
    send.add_argument("--to", action="append", default=[], metavar="CODE")
    send.add_argument("--subject")
    send.add_argument("--content", default="")
    send.add_argument("--priority", type=int, choices=range(5), default=0, metavar="0-4")
    send.add_argument(
        "--classification",
        choices=["mat", "toi-mat", "tuyet-mat"],
        help="secrecy level (Mật, Tối mật, Tuyệt mật)",
    )
    send.add_argument(
        "--due",
        metavar="DATE",
        help="deadline (DueDate, Vietnam time): yyyy/MM/dd [HH:mm:ss], dd/MM/yyyy or yyyy-MM-dd; "
        "a date alone means the end of that day",
    )
    send.add_argument("--attach", action="append", default=[], metavar="FILE")
    send.add_argument("--document-id", help="default: CODE,yyyy/MM/dd,<random>/GW")
    changes = send.add_mutually_exclusive_group()
    changes.add_argument(
        "--updates",
        metavar="ID",
        help="the document updates one you sent (BussinessDocType 2); --to defaults to its recipients",
    )
    changes.add_argument(
        "--replaces",
        metavar="ID",
        help="the document replaces one you sent (BussinessDocType 3); --to defaults to its recipients",
    )
    send.add_argument("--reason", help="why it is updated or replaced (BussinessDocReason)")
    send.add_argument("--json", action="store_true")

    inbox = sub.add_parser("inbox", help="list documents waiting for an agency")
    inbox.add_argument("--as", dest="agency", required=True, metavar="CODE")
    _url_option(inbox)
    inbox.add_argument("--all", action="store_true", help="include documents already fetched")
    inbox.add_argument("--json", action="store_true")

    fetch = sub.add_parser("fetch", help="fetch, verify and save a delivered document")
    fetch.add_argument("--as", dest="agency", required=True, metavar="CODE")
    _url_option(fetch)
    fetch.add_argument("id")
    fetch.add_argument("-o", "--output", help="file for the sender's signed edXML package (default: stdout)")
    fetch.add_argument(
        "--attachment",
        metavar="CID",
        help="write only this attachment (its ContentId, with or without cid:) to -o FILE, "
        "checked against the signed package",
    )

    status = sub.add_parser("status", help="send a status (01-06, 13, 15, 16) about a document")
    status.add_argument("--as", dest="agency", required=True, metavar="CODE")
    _url_option(status)
    status.add_argument("id")
    status.add_argument("code")
    status.add_argument("--note")

    recall = sub.add_parser(
        "recall", help="ask every recipient of a document you sent to give it back (status 13)"
    )
    recall.add_argument("--as", dest="agency", required=True, metavar="CODE")
    _url_option(recall)
    recall.add_argument("id")
    recall.add_argument("--reason", required=True, help="why (the status's Description)")

    receipts = sub.add_parser("receipts", help="receipts and statuses of a document")
    receipts.add_argument("--as", dest="agency", required=True, metavar="CODE")
    _url_option(receipts)
    receipts.add_argument("id")
    receipts.add_argument("--json", action="store_true")

    db = sub.add_parser("db", help="the node's database")
    db_sub = db.add_subparsers(dest="action", required=True, parser_class=_Parser)
    _database_option(
        db_sub.add_parser("upgrade", help="apply the schema migrations (Alembic) to the configured database")
    )

    deliveries = sub.add_parser("deliveries", help="operator actions on deliveries")
    deliveries_sub = deliveries.add_subparsers(dest="action", required=True, parser_class=_Parser)
    retry = deliveries_sub.add_parser("retry", help="re-drive the failed deliveries of a document")
    retry.add_argument("id")

    certs_cli.register(sub)  # the security officer's commands
    oversight_cli.register(sub)  # trace, audit, operator
    return p


def _url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="the gateway to talk to, https://HOST:PORT (default: $GATEWAY_URL, else where `gateway serve` "
        "in this home listens, else the config's port)",
    )


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        help="instead of the config's database: sqlite:///FILE or postgresql://USER@HOST:PORT/DB",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        home = resolve_home(args.home)
        code = _dispatch(args, home)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except UsageError as exc:
        print(f"gateway: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"gateway: error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"gateway: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_ERROR


def _reader_went_away() -> int:
    """``gateway certs list --json | head``: the reader closed the pipe, which is not an error of
    the command; stop quietly, as a tool ended by SIGPIPE does. Whatever is still buffered for
    stdout goes to /dev/null, so that Python's flush at exit cannot complain either."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_BROKEN_PIPE


def _dispatch(args: argparse.Namespace, home: Path) -> int:
    from gateway.cli import agency, node

    if args.command == "init":
        return node.init(home)
    if args.command in oversight_cli.COMMANDS:  # `audit verify --file` runs without a home
        return oversight_cli.run(
            args, lambda: load_config(home, Path(args.config).resolve() if args.config else None)
        )
    config = load_config(home, Path(args.config).resolve() if args.config else None)
    if getattr(args, "network", None) and args.command == "serve":
        config = replace(config, network=Network(args.network))
    if getattr(args, "database", None):
        config = replace(config, database=database_url(args.database, Path.cwd()))
    handler = {
        "certs": certs_cli.run,
        "deliveries": node.deliveries,
        "db": node.db,
        "serve": node.serve,
        "agencies": agency.agencies,
        "send": agency.send,
        "inbox": agency.inbox,
        "fetch": agency.fetch,
        "status": agency.status,
        "recall": agency.recall,
        "receipts": agency.receipts,
    }[args.command]
    return handler(config, args)


if __name__ == "__main__":
    raise SystemExit(main())
