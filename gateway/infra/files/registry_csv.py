"""The agency registry's file: a CSV the operator edits, read into a checked :class:`Registry`.

Columns ``code,name,network,parent,clearance,state,successor,retired_on``, UTF-8 (with or without
the byte-order mark spreadsheets write); lines starting with ``#`` are comments. Errors name
the file and line: "<file> line N: <what is wrong>". A registry of 120,000 agencies loads in
well under a second (``bench/registry_load.py``), so the reading loop is kept lean.
"""

from __future__ import annotations

import csv
import gc
import io
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

from gateway.domain.agencies import Agency, AgencyState, Registry, quoted
from gateway.domain.vocabulary import Classification, Network
from gateway.errors import ConfigError
from gateway.infra.files.atomic import write_atomic

CSV_HEADER: tuple[str, ...] = (
    "code",
    "name",
    "network",
    "parent",
    "clearance",
    "state",
    "successor",
    "retired_on",
)

_NETWORKS = {network.value: network for network in Network}
_CLEARANCES = {level.slug: level for level in Classification}
_STATES = {state.value: state for state in AgencyState}


def _cell_problem(row: list[str]) -> str:
    """Say which cell of a row the fast path could not convert (called only after it failed)."""
    _code, _name, network, _parent, clearance, state, _successor, retired_on = row
    if network.strip() not in _NETWORKS:
        return f"network {quoted(network)} is not one of: {', '.join(_NETWORKS)}"
    if clearance.strip() not in _CLEARANCES:
        return f"clearance {quoted(clearance)} is not one of: {', '.join(_CLEARANCES)}"
    if state.strip() not in _STATES:
        return f"state {quoted(state)} is not one of: {', '.join(_STATES)}"
    return f"retired_on {quoted(retired_on)} is not a date written YYYY-MM-DD"


def _without_comments(text: str) -> Iterator[str]:
    # A comment becomes a blank line rather than vanishing, so csv's line numbers stay true.
    for line in io.StringIO(text, newline=""):
        yield "\n" if line.startswith("#") else line


def load_registry(path: Path) -> Registry:
    """Read and check a registry CSV file; raise ``ConfigError`` "<file> line N: <what is wrong>"."""
    source = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the registry file {path}: {exc.strerror or exc}") from exc
    try:
        # utf-8-sig: spreadsheets save UTF-8 with a byte-order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{source} line {line}: not UTF-8 text (save the file as CSV UTF-8)") from None
    # The load allocates ~10^6 objects that all live on; generational GC passes over them
    # are pure cost (~15 % of the load), so collection waits until the registry is built.
    collecting = gc.isenabled()
    gc.disable()
    try:
        items, lines = _read_rows(text, source)
        return Registry.from_lines(items, source, lines)
    finally:
        if collecting:
            gc.enable()


def _read_rows(text: str, source: str) -> tuple[list[Agency], list[int]]:
    """The agencies in a registry file's text, and the line each was on."""
    has_comments = text.startswith("#") or "\n#" in text or "\r#" in text
    reader = csv.reader(
        _without_comments(text) if has_comments else io.StringIO(text, newline=""), strict=True
    )
    header = list(CSV_HEADER)
    try:
        for row in reader:
            if row:
                break
        else:
            raise ConfigError(f"{source}: the file is empty; the first line must be {','.join(CSV_HEADER)}")
        if row != header:
            raise ConfigError(
                f"{source} line {reader.line_num}: the header must be exactly {','.join(CSV_HEADER)}"
                f" (found {quoted(','.join(row)[:200])})"
            )

        items: list[Agency] = []
        lines: list[int] = []
        networks, clearances, states = _NETWORKS, _CLEARANCES, _STATES
        from_iso = date.fromisoformat
        append_item, append_line = items.append, lines.append
        for row in reader:
            # The hot loop: 120,000 rows in well under a second, so only dict look-ups and one constructor.
            try:
                code, name, network, parent, clearance, state, successor, retired_on = row
            except ValueError:
                if not any(row):
                    continue  # a blank line, or a spreadsheet's empty row
                cells = "1 cell" if len(row) == 1 else f"{len(row)} cells"
                raise ConfigError(
                    f"{source} line {reader.line_num}: has {cells}; "
                    f"expected {len(CSV_HEADER)} ({','.join(CSV_HEADER)})"
                ) from None
            if not code and not any(row):
                continue
            net = networks.get(network)
            level = clearances.get(clearance)
            status = states.get(state)
            try:
                if net is None or level is None or status is None:
                    # Tolerate spaces a spreadsheet or a hand edit left around a word.
                    net, level, status = (
                        networks[network.strip()],
                        clearances[clearance.strip()],
                        states[state.strip()],
                    )
                day = from_iso(retired_on.strip()) if retired_on else None
            except (KeyError, ValueError):
                raise ConfigError(f"{source} line {reader.line_num}: {_cell_problem(row)}") from None
            append_item(
                Agency(
                    code.strip(),
                    name.strip(),
                    net,
                    parent.strip() or None,
                    level,
                    status,
                    successor.strip() or None,
                    day,
                )
            )
            append_line(reader.line_num)
    except csv.Error as exc:
        raise ConfigError(f"{source} line {reader.line_num}: not valid CSV ({exc})") from None
    return items, lines


def write_registry(path: Path, agencies: Iterable[Agency]) -> None:
    """Write ``agencies`` in the :func:`load_registry` format, atomically (temp file, then rename).

    The agencies are checked as a :class:`Registry` first, so a file that would not load is never
    written. Comments in a previous version of the file are not kept; its permissions are.
    """
    items = list(agencies)
    Registry(items)
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(
        (
            agency.code,
            agency.name,
            agency.network.value,
            agency.parent or "",
            agency.clearance.slug,
            agency.state.value,
            agency.successor or "",
            agency.retired_on.isoformat() if agency.retired_on else "",
        )
        for agency in items
    )
    write_atomic(path, text.getvalue().encode("utf-8"), what="the registry file")
