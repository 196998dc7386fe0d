"""Agency codes and the agency registry: who may receive documents, and where retired codes forward to.

Two identifier forms are in use side by side and both are accepted everywhere:

* QCVN 102:2016 — exactly 13 characters ``DDD.DD.DD.LDD``, level 1 on the right
  (``000.00.00.G22``, ``002.00.20.H13``);
* QĐ 20/2020/QĐ-TTg — at most 35 characters of ``0-9``, ``A-Z`` and ``.``, groups
  added left to right, the first being the level-1 code ``MX1X2`` (``H41``,
  ``H41.12``, ``G22.05.117``); and as real packages on the axis write it, two-digit groups
  before the level-1 code (``28.22.H17``, ``01.02.G22``).

:class:`Registry` checks the agencies as a whole (unique codes, known parents and
successors, no cycles). A retired agency may name a successor; documents
addressed to it are forwarded along the successor chain by :meth:`Registry.resolve`.
Pure: the registry's file (a CSV the operator edits) is read and written by
``gateway.infra.files.registry_csv``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from operator import attrgetter
from typing import Literal

from gateway.domain.vocabulary import Classification, Network
from gateway.errors import ConfigError, InactiveRecipient, InvalidAgencyCode, UnknownRecipient

MAX_CODE_LENGTH = 35  # QĐ 20/2020/QĐ-TTg

# [0-9] rather than \d: \d also matches Arabic-Indic and other Unicode digits.
_LEVEL1 = r"[A-Y][0-9]{2}"
_CODE_RE = re.compile(
    rf"[0-9]{{3}}\.[0-9]{{2}}\.[0-9]{{2}}\.({_LEVEL1})"  # QCVN 102:2016
    rf"|({_LEVEL1})(?:\.[0-9A-Z]{{1,6}})*"  # QĐ 20/2020
    rf"|(?:[0-9]{{2}}\.)+({_LEVEL1})"  # QĐ 20/2020 as seen on the axis: 28.22.H17
)
_LEVEL1_SHAPE = re.compile(r"[A-Z][0-9]{2}")
_ALLOWED_CHARS = re.compile(r"[0-9A-Za-z.]*")  # lower case is diagnosed per group, with a better message
_LOWER_GROUP = re.compile(r"[0-9A-Z]+")
_QCVN_GROUP_SIZES = (3, 2, 2)
_MAX_LOWER_GROUP = 6  # the decision says 2 or 3; leave room for local practice


def quoted(text: str) -> str:
    """``text`` quoted for a message, invisible characters made visible (codes and cells come from
    untrusted packages and hand-edited files: a message never echoes a control code)."""
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return f"'{shown}'"


def _show_code(code: str) -> str:
    """A code as it may appear in a client-facing message: as is when it is plain, else quoted and cut."""
    if code and len(code) <= MAX_CODE_LENGTH and code.isprintable() and code.strip() == code:
        return code
    return quoted(code[:40]) + ("…" if len(code) > 40 else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _level1_problem(group: str) -> str | None:
    if _LEVEL1_SHAPE.fullmatch(group) is None:
        return "level-1 group must be a capital letter and two digits (like G22)"
    if group[0] == "Z":
        return "level-1 letter must be A–Y"
    return None


def _explain(value: str) -> str:
    """Say exactly what is wrong with a code the fast regex refused (``value`` is already stripped)."""
    if not value:
        return "agency code is empty"
    if len(value) > MAX_CODE_LENGTH:
        # Not echoed: an over-long code is as likely garbage as a typo.
        return f"agency code is {len(value)} characters; at most {MAX_CODE_LENGTH} are allowed"
    head = f"agency code {quoted(value)}"
    if _ALLOWED_CHARS.fullmatch(value) is None:
        bad = next(ch for ch in value if _ALLOWED_CHARS.fullmatch(ch) is None)
        return f"{head}: contains {quoted(bad)}, only 0-9, A-Z and '.' are allowed"
    if value[0] == "." or value[-1] == ".":
        return f"{head}: must not start or end with '.'"
    if ".." in value:
        return f"{head}: has an empty group ('..')"
    groups = value.split(".")
    if value[0].isdigit():
        # Codes starting with a digit have their level 1 on the right: the QCVN 102 form, or
        # two-digit groups before it (28.22.H17).
        if all(len(g) == 2 and g.isdigit() for g in groups[:-1]) and len(groups) > 1:
            problem = _level1_problem(groups[-1])
            return f"{head}: {problem}" if problem else f"{head}: not a valid agency code"
        if len(groups) != 4:
            return (
                f"{head}: a code starting with a digit must be the QCVN 102 form DDD.DD.DD.LDD; "
                f"this has {_plural(len(groups), 'group')}, not 4 (or two-digit groups before "
                "the level-1 code, like 28.22.H17)"
            )
        problem = _level1_problem(groups[3])
        if problem is not None:
            return f"{head}: {problem}"
        for number, (group, size) in enumerate(zip(groups, _QCVN_GROUP_SIZES, strict=False), start=1):
            if len(group) != size or not group.isdigit():
                return (
                    f"{head}: the QCVN 102 form is DDD.DD.DD.LDD; "
                    f"group {number} {quoted(group)} must be {size} digits"
                )
    else:
        problem = _level1_problem(groups[0])
        if problem is not None:
            return f"{head}: {problem}"
        for number, group in enumerate(groups[1:], start=2):
            if _LOWER_GROUP.fullmatch(group) is None:
                bad = next(ch for ch in group if _LOWER_GROUP.fullmatch(ch) is None)
                return f"{head}: contains {quoted(bad)}, only 0-9, A-Z and '.' are allowed"
            if len(group) > _MAX_LOWER_GROUP:
                return (
                    f"{head}: group {number} {quoted(group)} is {len(group)} characters; "
                    f"groups after the level-1 code have 1 to {_MAX_LOWER_GROUP}"
                )
    return f"{head}: not a valid agency code"  # defensive: every refusal above has its own reason


@dataclass(frozen=True, slots=True)
class AgencyCode:
    """A checked agency identifier in either the QCVN 102:2016 or the QĐ 20/2020 form."""

    value: str
    form: Literal["qcvn102", "qd20"]
    level1: str  # e.g. "G22": the ministry, province or organisation the agency belongs to

    @classmethod
    def parse(cls, text: str) -> AgencyCode:
        """Check ``text``, ignoring surrounding whitespace; ``InvalidAgencyCode`` says what is wrong."""
        value = text.strip()
        # Length first: a hostile multi-megabyte "code" must not reach the regex.
        match = _CODE_RE.fullmatch(value) if len(value) <= MAX_CODE_LENGTH else None
        if match is None:
            raise InvalidAgencyCode(_explain(value))
        qcvn_level1 = match.group(1)
        if qcvn_level1 is not None:
            return cls(value, "qcvn102", qcvn_level1)
        return cls(value, "qd20", match.group(2) or match.group(3))

    def __str__(self) -> str:
        return self.value


class AgencyState(StrEnum):
    """Whether an agency still receives documents itself."""

    ACTIVE = "active"
    RETIRED = "retired"  # merged or dissolved; documents go to its successor, if it has one


@dataclass(frozen=True, slots=True)
class Agency:
    """One registry entry. ``code`` is checked when a :class:`Registry` is built, not here (load speed)."""

    code: str
    name: str
    network: Network
    parent: str | None = None  # may be in the other code form
    clearance: Classification = Classification.NONE  # the highest secrecy level it may receive
    state: AgencyState = AgencyState.ACTIVE
    successor: str | None = None  # only for a retired agency
    retired_on: date | None = None

    @property
    def active(self) -> bool:
        """True when the agency receives documents itself."""
        return self.state is AgencyState.ACTIVE


@dataclass(frozen=True)
class Resolution:
    """Where a document addressed to ``addressed`` is delivered."""

    addressed: str
    agency: Agency  # the active agency that receives it
    chain: tuple[str, ...]  # codes followed from ``addressed`` to ``agency.code``, both included

    @property
    def redirected(self) -> bool:
        """True when the addressed agency is retired and a successor receives instead."""
        return len(self.chain) > 1


class Registry:
    """The agencies a gateway knows, checked as a whole; immutable once built."""

    __slots__ = ("_agencies", "_children")

    _agencies: dict[str, Agency]
    _children: dict[str, list[Agency]] | None

    def __init__(self, agencies: Iterable[Agency]) -> None:
        """Check and index ``agencies``; raise ``ConfigError`` naming the entry and codes at fault."""
        self._agencies = _check(list(agencies), "registry", lambda index: f"entry {index + 1}")
        self._children = None

    @classmethod
    def from_lines(cls, items: list[Agency], source: str, lines: Sequence[int]) -> Registry:
        """Check and index agencies read from ``source``; errors name the line (``lines[i]``) of each."""
        registry = cls.__new__(cls)
        registry._agencies = _check(items, source, lambda index: f"line {lines[index]}")
        registry._children = None
        return registry

    def get(self, code: str) -> Agency | None:
        """The agency with exactly this code, retired or not; None when there is none."""
        return self._agencies.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._agencies

    def __len__(self) -> int:
        return len(self._agencies)

    def __iter__(self) -> Iterator[Agency]:
        """Every agency, in file (or construction) order."""
        return iter(self._agencies.values())

    def __repr__(self) -> str:
        return f"<Registry of {len(self._agencies)} agencies>"

    def children(self, code: str) -> list[Agency]:
        """Agencies whose parent is ``code``, in file order (empty for an unknown code or a leaf)."""
        if self._children is None:
            # Built on first use: most gateways never ask, and load time matters more.
            index: dict[str, list[Agency]] = {}
            for agency in self._agencies.values():
                if agency.parent is not None:
                    index.setdefault(agency.parent, []).append(agency)
            self._children = index
        return list(self._children.get(code, ()))

    def by_network(self, network: Network) -> list[Agency]:
        """Agencies on ``network``, in file order, retired ones included (see :attr:`Agency.active`)."""
        return [agency for agency in self._agencies.values() if agency.network == network]

    def resolve(self, code: str) -> Resolution:
        """The active agency that receives what is addressed to ``code``, following successors.

        Raises ``UnknownRecipient`` for a code not in the registry and ``InactiveRecipient``
        when the code, or the end of its successor chain, is retired without a successor.
        """
        agency = self._agencies.get(code)
        if agency is None:
            raise UnknownRecipient(f"no agency with code {_show_code(code)} in the registry")
        chain = [code]
        # Terminates: construction refused successor cycles and unknown successors.
        while agency.state is AgencyState.RETIRED:
            if agency.successor is None:
                via = f" (successors followed: {' → '.join(chain)})" if len(chain) > 1 else ""
                raise InactiveRecipient(f"agency {agency.code} is retired and has no successor{via}")
            chain.append(agency.successor)
            agency = self._agencies[agency.successor]
        return Resolution(code, agency, tuple(chain))


def _check(items: list[Agency], source: str, at: Callable[[int], str]) -> dict[str, Agency]:
    """Index ``items`` by code after checking each entry and the references between them.

    ``at(index)`` names an entry ("line 17", "entry 3") and ``source`` what it is in.
    """

    def fail(index: int, problem: str) -> ConfigError:
        return ConfigError(f"{source} {at(index)}: {problem}")

    def position(code: str) -> int:
        # Only on the error path, so the happy path keeps no code → index map.
        return next(i for i, agency in enumerate(items) if agency.code == code)

    by_code: dict[str, Agency] = {}
    fullmatch = _CODE_RE.fullmatch
    active = AgencyState.ACTIVE
    for index, agency in enumerate(items):
        code = agency.code
        if len(code) > MAX_CODE_LENGTH or fullmatch(code) is None:
            try:
                AgencyCode.parse(code)
            except InvalidAgencyCode as exc:
                raise fail(index, exc.message) from None
            raise fail(index, f"agency code {quoted(code)} has whitespace around it")
        if code in by_code:
            raise fail(index, f"code {code} is used twice (first at {at(position(code))})")
        by_code[code] = agency
        name = agency.name
        if not name or name.isspace():
            raise fail(index, f"agency {code} has no name")
        if not name.isprintable():
            raise fail(index, f"the name of {code} contains a control character (line break or tab?)")
        if agency.state is active:
            if agency.successor is not None:
                raise fail(
                    index, f"agency {code} is active, so it cannot have a successor (set state retired)"
                )
            if agency.retired_on is not None:
                raise fail(index, f"agency {code} is active, so it cannot have a retired_on date")

    for index, agency in enumerate(items):
        if agency.parent is not None and agency.parent not in by_code:
            raise fail(index, f"parent {_show_code(agency.parent)} of {agency.code} is not in the registry")
        if agency.successor is not None and agency.successor not in by_code:
            raise fail(
                index, f"successor {_show_code(agency.successor)} of {agency.code} is not in the registry"
            )

    for attribute in ("successor", "parent"):
        cycle = _find_cycle(by_code, attrgetter(attribute))
        if cycle is not None:
            steps = " → ".join(f"{code} ({at(position(code))})" for code in cycle[:-1])
            raise fail(position(cycle[0]), f"{attribute}s form a cycle: {steps} → {cycle[-1]}")
    return by_code


def _find_cycle(by_code: dict[str, Agency], link: Callable[[Agency], str | None]) -> list[str] | None:
    """The first cycle of ``link`` references, as codes with the first repeated at the end; else None."""
    settled: set[str] = set()  # codes whose chain is known to end
    settle = settled.add
    for start, agency in by_code.items():
        target = link(agency)
        if target is None or target in settled:
            settle(start)  # the usual case: a parent listed before its children, or no successor
            continue
        path = [start]
        on_path = {start: 0}
        code: str | None = target
        while code is not None and code not in settled:
            if code in on_path:
                return [*path[on_path[code] :], code]
            on_path[code] = len(path)
            path.append(code)
            code = link(by_code[code])
        settled.update(path)
    return None


_GOV, _PARTY, _FRONT = Network.GOVERNMENT, Network.PARTY, Network.FRONT
_RETIRED = AgencyState.RETIRED

DEMO_AGENCIES: tuple[Agency, ...] = (
    Agency("000.00.00.G22", "Văn phòng Chính phủ", _GOV, None, Classification.TUYET_MAT),
    Agency("000.00.00.G12", "Bộ Tài chính", _GOV, None, Classification.TOI_MAT),
    Agency("000.00.00.H41", "UBND tỉnh Nghệ An", _GOV, None, Classification.TOI_MAT),
    Agency("000.00.00.A01", "Văn phòng Trung ương Đảng", _PARTY, None, Classification.TUYET_MAT),
    Agency("000.00.00.I01", "Ủy ban Trung ương MTTQ Việt Nam", _FRONT, None, Classification.TOI_MAT),
    # A parent in the other code form is normal while both forms are in use.
    Agency("H41.12.05", "UBND xã Nghi Lộc", _GOV, "000.00.00.H41", Classification.MAT),
    Agency("H41.01", "Tỉnh ủy Nghệ An", _PARTY, "000.00.00.A01", Classification.TOI_MAT),
    # The 2025 merger of the Ministry of Planning and Investment into the Ministry of Finance.
    Agency(
        "000.00.00.G16",
        "Bộ Kế hoạch và Đầu tư (đã hợp nhất)",
        _GOV,
        None,
        Classification.TOI_MAT,
        _RETIRED,
        "000.00.00.G12",
        date(2025, 3, 1),
    ),
    # Two successive commune mergers: H41.12.09 → H41.12.07 → H41.12.05.
    Agency(
        "H41.12.09",
        "UBND xã cũ (đã sáp nhập)",
        _GOV,
        "000.00.00.H41",
        Classification.MAT,
        _RETIRED,
        "H41.12.07",
        date(2025, 7, 1),
    ),
    Agency(
        "H41.12.07",
        "UBND xã trung gian (đã sáp nhập)",
        _GOV,
        "000.00.00.H41",
        Classification.MAT,
        _RETIRED,
        "H41.12.05",
        date(2025, 7, 1),
    ),
)
