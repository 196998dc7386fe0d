"""The rough edges a new user hit in the commands (issue 14), each pinned by a test that fails on
the old behaviour: operator validity, the certificate table, one time zone rule, a closed pipe,
``agencies show``, a second ``serve`` on a busy port, the certificates ``init`` made."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli import entry as cli
from gateway.domain.clock import shown
from gateway.infra.files.pki_dir import read_inventory
from gateway.infra.files.pki_init import LEAF_DAYS
from gateway.pki.inventory import OPERATOR_DAYS
from gateway.runtime.config import Config, load_config
from gateway.runtime.node import Node
from tests.conftest import COMMUNE, G16, set_setting

UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")  # how the log stores a time
SHOWN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+07:00")


def run(home: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--home", str(home), *args])
    return code, out.getvalue(), err.getvalue()


def test_both_ways_to_issue_an_operator_certificate_give_the_same_validity(
    home: Path, config: Config
) -> None:
    assert run(home, "certs", "issue", "--operator", "ops-a")[0] == 0
    assert run(home, "operator", "issue", "ops-b")[0] == 0
    assert run(home, "certs", "issue", "--agency", G16.replace("G16", "G12"), "--role", "sign")[0] == 0
    records = {r.owner: r for r in read_inventory(config.certs)}
    for owner in ("OPERATOR.ops-a", "OPERATOR.ops-b"):
        lasted = records[owner].not_after - records[owner].issued_at
        assert abs(lasted - timedelta(days=OPERATOR_DAYS)) < timedelta(minutes=10), (owner, lasted)
    staged = [
        r for r in read_inventory(config.certs) if r.owner == "000.00.00.G12" and r.slot.value == "next"
    ]
    assert abs(staged[0].not_after - staged[0].issued_at - timedelta(days=LEAF_DAYS)) < timedelta(minutes=10)
    # --help says the defaults the commands use (spelt out there so that parsing stays light).
    from gateway.cli import certs_args

    assert (certs_args.LEAF_DAYS_SAID, certs_args.OPERATOR_DAYS_SAID) == (LEAF_DAYS, OPERATOR_DAYS)


def test_certs_list_has_a_header_and_aligned_columns(home: Path) -> None:
    assert run(home, "certs", "issue", "--operator", "a-rather-long-operator-name")[0] == 0
    code, out, _ = run(home, "certs", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "OWNER", "ROLE", "STATE", "SERIAL", "KEY", "VALID", "FROM", "VALID", "UNTIL", "FINGERPRINT",
    ]  # fmt: skip
    owners = {line.split()[0] for line in lines[1:]}
    assert {"ADAPTER.GOVERNMENT", "OPERATOR.a-rather-long-operator-name", "000.00.00.G22"} <= owners
    # Every column starts where its header does, however long the owner's code.
    starts = [lines[0].index(h) for h in ("ROLE", "STATE", "SERIAL", "KEY", "VALID FROM", "FINGERPRINT")]
    for line in lines[1:]:
        for start in starts:
            assert line[start - 2 : start] == "  " and line[start] != " ", (line, start)


def test_every_time_the_certificate_commands_print_is_vietnam_time_and_says_so(home: Path) -> None:
    assert run(home, "certs", "issue", "--agency", "000.00.00.H41", "--role", "sign")[0] == 0
    serial = next(r.serial for r in read_inventory(home / "certs_dev") if r.slot.value == "next")
    assert run(home, "certs", "rotate", "--agency", "000.00.00.H41", "--role", "sign")[0] == 0
    assert run(home, "certs", "revoke", serial, "--reason", "test")[0] == 0
    outputs = {
        "list": run(home, "certs", "list")[1],
        "check": run(home, "certs", "check", "--within", "3650")[1],  # every certificate "expiring"
        "log": run(home, "certs", "log")[1],
        "issue": run(home, "certs", "issue", "--operator", "ops-tz")[1],
    }
    for name, out in outputs.items():
        assert SHOWN.search(out), (name, out)
        assert not UTC_STAMP.search(out), f"certs {name} printed a UTC time: {out}"
    # The same instant, not only the same look: the expiry in `check` is the record's not_after.
    record = next(r for r in read_inventory(home / "certs_dev") if r.owner == "000.00.00.G22")
    assert shown(record.not_after) in outputs["check"]
    assert shown(datetime(2026, 12, 4, 3, 4, 5, tzinfo=UTC)) == "2026-12-04 10:04:05 +07:00"


@pytest.mark.parametrize(
    "command",
    [["certs", "list", "--json"], ["certs", "list"], ["agencies", "list"], ["certs", "export-ca"]],
)
def test_a_reader_that_closes_the_pipe_early_gets_no_error(home: Path, command: list[str]) -> None:
    """``gateway certs list --json | head`` once ended with ``gateway: error: Broken pipe``."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--home", str(home), *command],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode == 141  # as a tool ended by SIGPIPE: a pipeline with pipefail still sees it


def test_agencies_show_prints_a_dash_for_nothing_never_python_none(home: Path) -> None:
    for code in (G16, COMMUNE):  # retired without a parent; a commune without successor or children
        status, out, _ = run(home, "agencies", "show", code)
        assert status == 0
        assert "None" not in out and not re.search(r":\s*$", out, re.M), out
    assert "     parent: -" in run(home, "agencies", "show", G16)[1]
    assert "   children: -" in run(home, "agencies", "show", COMMUNE)[1]


def test_a_second_serve_on_a_busy_port_fails_before_it_touches_the_database(home: Path) -> None:
    busy = socket.create_server(("127.0.0.1", 0))  # the first `serve`, as far as the port goes
    port = busy.getsockname()[1]
    fresh = home / "fresh.db"  # a database that does not exist yet: opening it would create it
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--home", str(home), "serve", "--port", str(port),
             "--database", f"sqlite:///{fresh}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        busy.close()
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("gateway: error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}: the port is in use" in errors[0], result.stderr
    assert "--port" in errors[0] and "Traceback" not in result.stderr
    assert not list(home.glob("fresh.db*")), "the database was created before the port was tried"
    assert not (home / "gateway.db").exists()


async def test_the_certificates_init_made_are_in_the_certificate_log_once(home: Path, config: Config) -> None:
    """`gateway init` runs before any database exists; its certificates used to be missing from
    `gateway certs log` for good. The first reader of the log, or the node at start, records them."""
    made = {r.serial: r for r in read_inventory(config.certs)}
    assert made and {r.issued_by for r in made.values()} == {"gateway init"}

    def logged() -> list[dict[str, object]]:
        code, out, err = run(home, "certs", "log", "--json")
        assert code == 0, err
        events: list[dict[str, object]] = json.loads(out)["events"]
        return events

    first = await asyncio.to_thread(logged)
    issued = [e for e in first if e["event"] == "cert_issued"]
    assert sorted(e["detail"]["serial"] for e in issued) == sorted(made)  # type: ignore[index]
    assert {e["detail"]["by"] for e in issued} == {"gateway init"}  # type: ignore[index]
    assert await asyncio.to_thread(logged) == first, "a second reading recorded them again"
    # Text too: the table says who issued them.
    assert (
        "by=gateway init"
        in (await asyncio.to_thread(run, home, "certs", "log", "--agency", "000.00.00.G22"))[1]
    )

    # A node started on a fresh database records them at start, without anyone reading first.
    set_setting(home, "database", '"sqlite:///other.db"')
    node = Node(load_config(home))
    await node.start(port=0)
    try:
        for _ in range(200):  # the start-up certificate check runs as a task beside the server
            seen = await node.store.events_where(kind_prefix="cert_issued")
            if seen:
                break
            await asyncio.sleep(0.05)
        assert sorted(str(e.detail["serial"]) for e in seen) == sorted(made)
    finally:
        await node.stop()


def _readme_patterns() -> list[re.Pattern[str]]:
    """The paths certs_dev/README.md names, as patterns: ``<x>`` any one name, ``{a,b}`` one of."""
    readme = (Path(__file__).resolve().parents[1] / "certs_dev" / "README.md").read_text(encoding="utf-8")
    block = readme.split("```")[1]
    patterns = []
    for line in block.splitlines():
        if not line or line[0] == " ":
            continue  # a description continued
        path = line.split()[0]
        text = path.replace(".", r"\.").replace("<dir>", ".+")  # an agency's, adapter's or server
        text = re.sub(r"<[^>]+>", "[^/]+", text)
        text = re.sub(r"\{([^}]*)\}", lambda m: "(" + m.group(1).replace(",", "|") + ")", text)
        patterns.append(re.compile(text))
    return patterns


def test_certs_dev_readme_names_every_file_the_pki_commands_write(home: Path) -> None:
    assert run(home, "certs", "issue", "--agency", "000.00.00.G22", "--role", "encrypt")[0] == 0  # next/
    assert run(home, "certs", "rotate", "--agency", "ADAPTER.PARTY", "--role", "encrypt")[0] == 0  # retired/
    assert run(home, "certs", "issue", "--operator", "ops-files")[0] == 0  # operators/
    certs = home / "certs_dev"
    patterns = _readme_patterns()
    written = sorted(str(p.relative_to(certs)) for p in certs.rglob("*") if p.is_file())
    assert "networks/party/adapter/encrypt.key" in written
    unnamed = [f for f in written if f != "README.md" and not any(p.fullmatch(f) for p in patterns)]
    assert not unnamed, f"certs_dev/README.md does not say what these are: {unnamed}"


def test_a_missing_config_file_is_named_with_what_to_check(home: Path, tmp_path: Path) -> None:
    code, _, err = run(home, "--config", str(tmp_path / "node-party.toml"), "serve")
    assert code == 1 and err.count("\n") == 1
    assert "node-party.toml (--config) not found" in err and "gateway init" not in err, err
    code, out, _ = run(home, "certs", "list", "--agency", "000.00.00.A99")
    assert code == 0 and "without options lists them all" in out
