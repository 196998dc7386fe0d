"""Agency codes in both forms, the registry's checks and successor resolution, and the CSV file."""

from __future__ import annotations

import gc
import os
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from gateway.domain.agencies import DEMO_AGENCIES, Agency, AgencyCode, AgencyState, Registry
from gateway.domain.vocabulary import Classification, Network
from gateway.errors import ConfigError, InactiveRecipient, InvalidAgencyCode, UnknownRecipient
from gateway.infra.files.registry_csv import CSV_HEADER, load_registry, write_registry

GOV = Network.GOVERNMENT
RETIRED = AgencyState.RETIRED
HEADER = ",".join(CSV_HEADER)


# --- codes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "form", "level1"),
    [
        ("000.00.00.G22", "qcvn102", "G22"),
        ("000.00.00.H41", "qcvn102", "H41"),
        ("002.00.20.H13", "qcvn102", "H13"),
        ("000.00.00.I01", "qcvn102", "I01"),
        ("H41", "qd20", "H41"),
        ("H41.12", "qd20", "H41"),
        ("G22.05.117", "qd20", "G22"),
        ("A01.1", "qd20", "A01"),
        ("Y99.ABCDEF.0A", "qd20", "Y99"),
        ("H41.01.02.03.04.05.06.07.08.09.10.1", "qd20", "H41"),  # exactly 35 characters
    ],
)
def test_both_code_forms_parse(text: str, form: str, level1: str) -> None:
    code = AgencyCode.parse(text)
    assert len(text) <= 35
    assert code == AgencyCode(text, form, level1)  # type: ignore[arg-type]
    assert str(code) == text


def test_surrounding_whitespace_is_ignored() -> None:
    assert AgencyCode.parse("  000.00.00.G22\n").value == "000.00.00.G22"
    assert AgencyCode.parse("\tH41.12 ").value == "H41.12"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "000.00.00.g22",
            "agency code '000.00.00.g22': level-1 group must be a capital letter and two digits (like G22)",
        ),
        (
            "000.0.00.G22",
            "agency code '000.0.00.G22': the QCVN 102 form is DDD.DD.DD.LDD; group 2 '0' must be 2 digits",
        ),
        ("00A.00.00.G22", "group 1 '00A' must be 3 digits"),
        ("000.00.000.G22", "group 3 '000' must be 2 digits"),
        ("Z01", "agency code 'Z01': level-1 letter must be A–Y"),
        ("000.00.00.Z01", "level-1 letter must be A–Y"),
        ("h41.12", "level-1 group must be a capital letter and two digits"),
        ("H4.12", "level-1 group must be a capital letter and two digits"),
        ("000.00.00.G2", "level-1 group must be a capital letter and two digits"),
        ("H41." + "0" * 34, "agency code is 38 characters; at most 35 are allowed"),
        ("H41.x2", "agency code 'H41.x2': contains 'x', only 0-9, A-Z and '.' are allowed"),
        ("H41/12", "contains '/', only 0-9, A-Z and '.' are allowed"),
        ("H41.Đ2", "contains 'Đ'"),
        ("H41 12", "contains ' '"),
        ("H41.12\u200b", "contains '\\u200b'"),  # invisible characters are shown, not echoed
        ("H41..12", "has an empty group"),
        (".H41", "must not start or end with '.'"),
        ("H41.12.", "must not start or end with '.'"),
        ("H41.1234567", "group 2 '1234567' is 7 characters"),
        ("000.00.G22", "must be the QCVN 102 form DDD.DD.DD.LDD; this has 3 groups, not 4"),
        ("000.00.00.G22.01", "this has 5 groups, not 4"),
        ("", "agency code is empty"),
        ("   ", "agency code is empty"),
    ],
)
def test_malformed_codes_are_refused_saying_why(text: str, expected: str) -> None:
    with pytest.raises(InvalidAgencyCode) as caught:
        AgencyCode.parse(text)
    assert expected in caught.value.message
    assert caught.value.code == "invalid_agency_code"


def test_unicode_digits_are_not_digits() -> None:
    # Arabic-Indic digits match \d; a code must not.
    with pytest.raises(InvalidAgencyCode, match="contains"):
        AgencyCode.parse("H\u0664\u0661")


def test_a_huge_code_is_refused_without_being_echoed() -> None:
    with pytest.raises(InvalidAgencyCode) as caught:
        AgencyCode.parse("H41." + "1" * 1_000_000)
    assert caught.value.message == "agency code is 1000004 characters; at most 35 are allowed"


# --- registry ------------------------------------------------------------------------------------


def _agency(code: str, **changes: object) -> Agency:
    return replace(Agency(code, f"Cơ quan {code}", GOV), **changes)  # type: ignore[arg-type]


@pytest.fixture
def demo() -> Registry:
    return Registry(DEMO_AGENCIES)


def test_demo_registry_has_the_required_agencies(demo: Registry) -> None:
    assert len(demo) == len(DEMO_AGENCIES)
    required = {
        "000.00.00.G22": (Network.GOVERNMENT, Classification.TUYET_MAT),
        "000.00.00.H41": (Network.GOVERNMENT, Classification.TOI_MAT),
        "000.00.00.A01": (Network.PARTY, Classification.TUYET_MAT),
        "000.00.00.I01": (Network.FRONT, Classification.TOI_MAT),
        "000.00.00.G12": (Network.GOVERNMENT, Classification.TOI_MAT),
        "H41.12.05": (Network.GOVERNMENT, Classification.MAT),
        "H41.01": (Network.PARTY, Classification.TOI_MAT),
    }
    for code, (network, clearance) in required.items():
        agency = demo.get(code)
        assert agency is not None, code
        assert (agency.network, agency.clearance, agency.state) == (network, clearance, AgencyState.ACTIVE)
    g16 = demo.get("000.00.00.G16")
    assert g16 is not None
    assert (g16.state, g16.successor, g16.retired_on) == (RETIRED, "000.00.00.G12", date(2025, 3, 1))
    assert [agency.code for agency in demo] == [agency.code for agency in DEMO_AGENCIES]  # order kept
    for agency in DEMO_AGENCIES:
        AgencyCode.parse(agency.code)


def test_resolve_an_active_agency(demo: Registry) -> None:
    resolution = demo.resolve("000.00.00.G22")
    assert resolution.agency.name == "Văn phòng Chính phủ"
    assert resolution.chain == ("000.00.00.G22",)
    assert resolution.addressed == "000.00.00.G22"
    assert not resolution.redirected


def test_resolve_a_retired_agency_goes_to_its_successor(demo: Registry) -> None:
    resolution = demo.resolve("000.00.00.G16")
    assert resolution.redirected
    assert resolution.addressed == "000.00.00.G16"
    assert resolution.agency.code == "000.00.00.G12"
    assert resolution.agency.name == "Bộ Tài chính"
    assert resolution.chain == ("000.00.00.G16", "000.00.00.G12")


def test_resolve_follows_a_chain_of_two_hops(demo: Registry) -> None:
    resolution = demo.resolve("H41.12.09")
    assert resolution.redirected
    assert resolution.chain == ("H41.12.09", "H41.12.07", "H41.12.05")
    assert resolution.agency.code == "H41.12.05"
    assert resolution.agency.state is AgencyState.ACTIVE


def test_resolve_an_unknown_code(demo: Registry) -> None:
    with pytest.raises(UnknownRecipient, match=r"no agency with code 000\.00\.00\.G99 in the registry"):
        demo.resolve("000.00.00.G99")
    with pytest.raises(UnknownRecipient):
        demo.resolve(" 000.00.00.G22")  # lookups are exact; callers strip


def test_resolve_a_retired_agency_without_successor() -> None:
    registry = Registry([_agency("H41.12.01", state=RETIRED, retired_on=date(2025, 7, 1))])
    with pytest.raises(InactiveRecipient, match=r"agency H41\.12\.01 is retired and has no successor"):
        registry.resolve("H41.12.01")


def test_resolve_a_chain_that_ends_in_a_retired_agency() -> None:
    registry = Registry(
        [
            _agency("H41.12.02", state=RETIRED, successor="H41.12.01"),
            _agency("H41.12.01", state=RETIRED),
        ]
    )
    with pytest.raises(InactiveRecipient) as caught:
        registry.resolve("H41.12.02")
    assert "agency H41.12.01 is retired and has no successor" in caught.value.message
    assert "H41.12.02 → H41.12.01" in caught.value.message


def test_children_and_networks(demo: Registry) -> None:
    assert [agency.code for agency in demo.children("000.00.00.H41")] == [
        "H41.12.05",
        "H41.12.09",
        "H41.12.07",
    ]
    assert [agency.code for agency in demo.children("000.00.00.A01")] == ["H41.01"]
    assert demo.children("H41.12.05") == []
    assert demo.children("000.00.00.G99") == []
    party = [agency.code for agency in demo.by_network(Network.PARTY)]
    assert party == ["000.00.00.A01", "H41.01"]
    assert [agency.code for agency in demo.by_network(Network.FRONT)] == ["000.00.00.I01"]


def test_a_successor_cycle_is_refused() -> None:
    agencies = [
        _agency("000.00.00.G22"),
        _agency("H41.12.01", state=RETIRED, successor="H41.12.02"),
        _agency("H41.12.02", state=RETIRED, successor="H41.12.03"),
        _agency("H41.12.03", state=RETIRED, successor="H41.12.01"),
    ]
    with pytest.raises(ConfigError) as caught:
        Registry(agencies)
    message = caught.value.message
    assert message.startswith("registry entry 2: successors form a cycle")
    assert "H41.12.01 (entry 2) → H41.12.02 (entry 3) → H41.12.03 (entry 4) → H41.12.01" in message


def test_an_agency_that_succeeds_itself_is_a_cycle() -> None:
    with pytest.raises(ConfigError, match=r"successors form a cycle: H41\.12\.01 \(entry 1\) → H41\.12\.01$"):
        Registry([_agency("H41.12.01", state=RETIRED, successor="H41.12.01")])


def test_a_parent_cycle_is_refused() -> None:
    with pytest.raises(ConfigError, match="parents form a cycle"):
        Registry([_agency("H41.01", parent="H41.02"), _agency("H41.02", parent="H41.01")])


@pytest.mark.parametrize(
    ("agencies", "expected"),
    [
        ([_agency("H41"), _agency("H41")], "registry entry 2: code H41 is used twice (first at entry 1)"),
        ([_agency("H41", parent="H42")], "registry entry 1: parent H42 of H41 is not in the registry"),
        (
            [_agency("H41", state=RETIRED, successor="H42")],
            "registry entry 1: successor H42 of H41 is not in the registry",
        ),
        ([_agency("H41", successor="H41")], "H41 is active, so it cannot have a successor"),
        ([_agency("H41", retired_on=date(2025, 1, 1))], "H41 is active, so it cannot have a retired_on date"),
        ([_agency("H41", name=" ")], "agency H41 has no name"),
        ([_agency("H41", name="a\nb")], "contains a control character"),
        ([_agency("h41")], "registry entry 1: agency code 'h41': level-1 group must be"),
        ([_agency(" H41")], "agency code ' H41' has whitespace around it"),
    ],
)
def test_bad_registries_are_refused(agencies: list[Agency], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Registry(agencies)
    assert expected in caught.value.message


# --- the CSV file --------------------------------------------------------------------------------


def test_csv_round_trip_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    agencies = [
        *DEMO_AGENCIES,
        _agency("H41.12.11", name='Ban "Dân vận", Tỉnh ủy; Nghệ An', network=Network.PARTY),
        _agency("G22.05.117", name="Cục Kiểm soát thủ tục hành chính", parent="000.00.00.G22"),
    ]
    write_registry(path, agencies)
    assert list(load_registry(path)) == agencies
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER + "\n")
    assert "Ủy ban Trung ương MTTQ Việt Nam" in text  # plain UTF-8, not escaped
    # Writing what was loaded gives the same bytes.
    again = tmp_path / "again.csv"
    write_registry(again, load_registry(path))
    assert again.read_bytes() == path.read_bytes()


def test_write_replaces_atomically_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o640)
    write_registry(path, DEMO_AGENCIES)
    assert path.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["registry.csv"]  # no temp file left behind
    assert len(load_registry(path)) == len(DEMO_AGENCIES)


def test_write_refuses_a_bad_registry_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    write_registry(path, DEMO_AGENCIES)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="parent"):
        write_registry(path, [_agency("H41.01", parent="H41")])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["registry.csv"]


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "registry.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_comments_blank_lines_bom_crlf_and_spaces_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "registry.csv"
    text = "\r\n".join(
        [
            "# Danh mục cơ quan — sửa bằng Excel hoặc trình soạn thảo",
            HEADER,
            '# a comment with a stray " quote',
            "000.00.00.H41,UBND tỉnh Nghệ An,government,,toi-mat,active,,",
            "",
            ",,,,,,,",
            " H41.12.05 , UBND xã Nghi Lộc ,government , 000.00.00.H41 ,mat , active,,",
            "H41.12.07,UBND xã cũ,government,000.00.00.H41,none,retired,H41.12.05,2025-07-01",
        ]
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    registry = load_registry(path)
    assert [agency.code for agency in registry] == ["000.00.00.H41", "H41.12.05", "H41.12.07"]
    assert registry.get("H41.12.05") == Agency(
        "H41.12.05", "UBND xã Nghi Lộc", GOV, "000.00.00.H41", Classification.MAT
    )
    assert registry.resolve("H41.12.07").agency.code == "H41.12.05"


def test_an_empty_registry_file_with_a_header_loads(tmp_path: Path) -> None:
    assert len(load_registry(_write(tmp_path, "# nothing yet", HEADER))) == 0


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("000.00.00.g41,UBND,government,,mat,active,,", "level-1 group must be a capital letter"),
        ("H41.12.05,UBND,gov,,mat,active,,", "network 'gov' is not one of: party, government, front"),
        ("H41.12.05,UBND,government,,secret,active,,", "clearance 'secret' is not one of: none, mat"),
        ("H41.12.05,UBND,government,,mat,closed,,", "state 'closed' is not one of: active, retired"),
        ("H41.12.05,UBND,government,,mat,retired,,01/07/2025", "retired_on '01/07/2025' is not a date"),
        ("H41.12.05,UBND,government,,mat,active,", "has 7 cells; expected 8"),
        (
            "H41.12.05,UBND,government,H41.99,mat,active,,",
            "parent H41.99 of H41.12.05 is not in the registry",
        ),
        ("H41.12.05,,government,,mat,active,,", "agency H41.12.05 has no name"),
        (
            "000.00.00.H41,Trùng mã,government,,mat,active,,",
            "code 000.00.00.H41 is used twice (first at line 3)",
        ),
        ('H41.12.05,"UBND" xã,government,,mat,active,,', "not valid CSV"),
    ],
)
def test_a_bad_row_reports_its_line_number(tmp_path: Path, row: str, expected: str) -> None:
    path = _write(
        tmp_path,
        "# registry",
        HEADER,
        "000.00.00.H41,UBND tỉnh Nghệ An,government,,toi-mat,active,,",
        "",
        row,
        "H41.12.06,UBND xã khác,government,000.00.00.H41,mat,active,,",
    )
    with pytest.raises(ConfigError) as caught:
        load_registry(path)
    assert caught.value.message.startswith("registry.csv line 5: ")
    assert expected in caught.value.message


def test_a_successor_cycle_in_the_file_names_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        HEADER,
        "H41.12.01,Xã A,government,,none,retired,H41.12.02,2025-07-01",
        "# between",
        "H41.12.02,Xã B,government,,none,retired,H41.12.01,2025-07-01",
    )
    with pytest.raises(ConfigError) as caught:
        load_registry(path)
    assert caught.value.message == (
        "registry.csv line 2: successors form a cycle: H41.12.01 (line 2) → H41.12.02 (line 4) → H41.12.01"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "registry.csv: the file is empty"),
        (b"code;name;network\n", "registry.csv line 1: the header must be exactly " + HEADER),
        (
            HEADER.encode() + b"\nH41,UBND t\xe1nh,government,,mat,active,,\n",
            "registry.csv line 2: not UTF-8",
        ),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "registry.csv"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_registry(path)
    assert caught.value.message.startswith(expected)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the registry file"):
        load_registry(tmp_path / "absent.csv")


def test_many_agencies_load_with_every_row_intact(tmp_path: Path) -> None:
    # Speed is measured by bench/registry_load.py (120,000 agencies), never by a timed test.
    agencies = [Agency("000.00.00.H41", "UBND tỉnh Nghệ An", GOV)]
    agencies += [
        _agency(f"H41.{i // 1000:02d}.{i % 1000:03d}", parent="000.00.00.H41") for i in range(20_000)
    ]
    path = tmp_path / "registry.csv"
    write_registry(path, agencies)
    registry = load_registry(path)
    assert len(registry) == 20_001
    assert registry.get("H41.19.999") == agencies[-1] and registry.get("H41.00.000") == agencies[1]


def test_loading_leaves_the_garbage_collector_as_it_was(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    write_registry(good, DEMO_AGENCIES)
    bad = _write(tmp_path, HEADER, "H41,UBND,nowhere,,mat,active,,")
    assert gc.isenabled()
    load_registry(good)
    assert gc.isenabled()
    with pytest.raises(ConfigError):
        load_registry(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        load_registry(good)
        assert not gc.isenabled()  # an application that turned it off keeps it off
    finally:
        gc.enable()
