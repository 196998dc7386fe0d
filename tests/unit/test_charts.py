"""The console's charts and overview as text: known series in, the SVG and HTML they must give out.

The SVG is parsed as XML (it must be well-formed to be inline SVG at all) and its bars, lines and
dots are measured against the plot's geometry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from gateway.domain.vocabulary import Classification, DeliveryState, Network, Priority
from gateway.exchange.ports import DeliveryRecord, DocumentRecord
from gateway.operators import pages
from gateway.operators.activity import Series, last_hour, percentile, window
from gateway.operators.charts import (
    LEFT,
    PLOT_H,
    PLOT_W,
    TOP,
    in_duration_unit,
    line_chart,
    nice_scale,
    seconds_text,
    stacked_bars,
)
from gateway.operators.metrics import CertExpiry
from gateway.operators.readmodel import (
    Activity,
    DocumentSummary,
    Failing,
    Finished,
    MinuteCount,
    QueueDepth,
    RouteMinute,
)

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 11, 22, 3, 30, 20, tzinfo=UTC)


def svg(text: str) -> etree._Element:
    return etree.fromstring(text.encode())


@pytest.mark.parametrize(
    ("highest", "top", "step"),
    [(0, 1, 0.25), (1, 1, 0.5), (3, 3, 1), (7, 8, 2), (10, 10, 5), (100, 100, 50), (0.3, 0.3, 0.1),
     (1234, 1500, 500)],
)  # fmt: skip
def test_the_scale_ends_on_a_round_number_above_the_highest_value(
    highest: float, top: float, step: float
) -> None:
    scale = nice_scale(highest)
    assert scale.top == pytest.approx(top) and scale.step == pytest.approx(step)
    assert scale.top >= highest and scale.top / scale.step <= 4 + 1e-9


def test_counts_step_by_whole_numbers_and_durations_read_in_their_unit() -> None:
    assert nice_scale(2, whole=True) == nice_scale(2.0, whole=True) and nice_scale(2, whole=True).step == 1
    assert nice_scale(0, whole=True).step == 1 and nice_scale(30, whole=True).step == 10
    assert [seconds_text(v) for v in (0.05, 45, 90, 10200)] == ["0.05 s", "45 s", "1.5 min", "2.83 h"]
    scaled, text = in_duration_unit([Series("p95", (30.0, None, 1500.0))])
    assert scaled[0].values == (0.5, None, 25.0) and text(25) == "25 min"
    assert in_duration_unit([Series("p50", (None, 2.5))])[1](2.5) == "2.5 s"
    root = svg(line_chart("l", "t", ["a", "b", "c"], scaled, {}, text=text))
    assert [t.text for t in root.findall(f"{SVG}text")][:4] == ["0 min", "10 min", "20 min", "30 min"]


def test_a_queue_line_without_dots_is_one_path() -> None:
    root = svg(
        line_chart("q", "Queue", ["a", "b", "c"], [Series("party", (0, 3, 1))], {}, whole=True, dots=False)
    )
    assert root.findall(f"{SVG}circle") == [] and len(root.findall(f"{SVG}path")) == 1
    grid = [t.text for t in root.findall(f"{SVG}text")][:4]
    assert grid == ["0", "1", "2", "3"]


def test_stacked_bars_draw_each_nonzero_value_with_its_height() -> None:
    labels = ["10:00", "10:01", "10:02", "10:03"]
    series = [Series("party", (1, 0, 3, None)), Series("government", (1, 2, 0, 0))]
    root = svg(stacked_bars("c", "Per minute", labels, series, {"party": "#c00", "government": "#00c"}))
    bars = root.findall(f"{SVG}rect")
    assert [(b.get("data-series"), b.findtext(f"{SVG}title")) for b in bars] == [
        ("party", "10:00 party: 1"), ("government", "10:00 government: 1"),
        ("government", "10:01 government: 2"), ("party", "10:02 party: 3"),
    ]  # fmt: skip
    unit = PLOT_H / 3  # the highest stack is 3, and 3 is a round top
    heights = [float(b.get("height", "")) for b in bars]
    assert heights == pytest.approx([unit, unit, 2 * unit, 3 * unit], abs=0.02)
    first, second = bars[0], bars[1]  # stacked: the second sits on the first
    assert float(second.get("y", "")) + float(second.get("height", "")) == pytest.approx(
        float(first.get("y", "")), abs=0.02
    )
    assert float(bars[3].get("y", "")) == pytest.approx(TOP, abs=0.02)  # the tallest reaches the top
    xs = [float(b.get("x", "")) for b in bars]
    slot = PLOT_W / 4
    assert (
        xs[0] == xs[1] and xs[2] == pytest.approx(xs[0] + slot) and xs[3] == pytest.approx(xs[0] + 2 * slot)
    )
    assert all(float(b.get("x", "")) >= LEFT for b in bars)
    assert root.get("id") == "c" and root.find(f"{SVG}text[@class='empty']") is None


def test_an_empty_bar_chart_says_so_and_draws_no_bar() -> None:
    root = svg(stacked_bars("c", "t", ["a", "b"], [Series("x", (0, None))], {}, empty="nothing here"))
    assert root.findall(f"{SVG}rect") == []
    assert root.find(f"{SVG}text[@class='empty']").text == "nothing here"  # type: ignore[union-attr]


def test_a_line_breaks_where_a_minute_has_no_value_and_every_value_is_a_dot() -> None:
    labels = [f"10:0{i}" for i in range(5)]
    root = svg(
        line_chart("l", "Latency", labels, [Series("p50", (1, None, 2, 4, None))], {}, text=seconds_text)
    )
    (path,) = root.findall(f"{SVG}path")
    d = path.get("d", "")
    assert d.count("M") == 2 and d.count("L") == 1  # 1 | 2 → 4
    dots = root.findall(f"{SVG}circle")
    assert [c.findtext(f"{SVG}title") for c in dots] == ["10:00 p50: 1 s", "10:02 p50: 2 s", "10:03 p50: 4 s"]
    cy = [float(c.get("cy", "")) for c in dots]
    assert cy[2] == pytest.approx(TOP) and cy[0] == pytest.approx(TOP + PLOT_H * 3 / 4)  # the top is 4


def test_names_are_escaped_and_no_script_gets_in() -> None:
    evil = '<script>alert("x")</script>'
    text = stacked_bars("c", evil, [evil], [Series(evil, (1,))], {evil: '"><script>'})
    root = svg(text)
    assert "<script" not in text and root.find(f".//{SVG}script") is None
    assert root.findtext(f"{SVG}title") == evil


# --- the last hour from the read model -----------------------------------------------------------


def minute(ago: int) -> datetime:
    return NOW.replace(second=0, microsecond=0) - timedelta(minutes=ago)


def finished(
    ago: float, doc: str, network: str, kind: str = "delivered", *, waited: float = 0, of: str = "edoc"
) -> Finished:
    at = NOW - timedelta(minutes=ago)
    return Finished(at, doc, network, kind, of, at - timedelta(seconds=waited))


def test_the_last_hour_counts_latency_and_walks_the_queue_back_from_now() -> None:
    activity = Activity(
        since=window(NOW)[0],
        routes=[
            RouteMinute(minute(50), "party", 0, "edoc", 2),
            RouteMinute(minute(50), "government", 0, "edoc", 1),
            RouteMinute(minute(20), "party", 3, "edoc", 1),
            RouteMinute(minute(20), "party", 0, "status", 1),  # a status is queued too, not drawn
            RouteMinute(minute(90), "party", 0, "edoc", 7),  # before the window: ignored
        ],
        finished=[
            finished(45, "a", "party", waited=300),
            finished(45, "a", "party", waited=300),  # 2 recipients
            finished(45, "b", "party", waited=100),
            finished(45, "c", "government", waited=10),
            finished(19, "d", "party", waited=30),
            finished(19, "s", "party", waited=5, of="status"),
            finished(10, "old", "party", waited=9000),  # accepted before the window, waited in the queue
            finished(5, "e", "party", "failed"),
        ],
        pending=[QueueDepth("party", 0, 2), QueueDepth("front", 3, 1)],
        complete=True,
    )
    accepted = [MinuteCount(minute(50), "government", 0, 3), MinuteCount(minute(20), "party", 3, 1)]
    hour = last_hour(activity, accepted, now=NOW)
    assert len(hour.minutes) == 60 and hour.minutes[-1] == minute(0) and hour.minutes[0] == minute(59)
    i50, i45, i20, i19, i10, i5 = (59 - a for a in (50, 45, 20, 19, 10, 5))
    target = {s.name: s.values for s in hour.by_target}
    assert target["party"][i50] == 2 and target["government"][i50] == 1 and target["party"][i20] == 1
    assert sum(v or 0 for v in target["party"]) == 3  # the status route is not a document
    priority = {s.name: s.values for s in hour.by_priority}
    assert priority["0"][i50] == 3 and priority["3"][i20] == 1 and sum(map(sum, priority.values())) == 4  # type: ignore[arg-type]
    p50, p95 = (s.values for s in hour.latency)
    assert p50[i45] == 100 and p95[i45] == 300  # 10, 100, 300, 300: nearest rank
    assert p50[i10] == 9000 and p50[i5] is None and p50[i19] == 30 and p95[i19] == 30
    queue = {s.name: s.values for s in hour.queue}
    assert queue["party"][-1] == 2 and queue["front"][-1] == 1 and queue["government"][-1] == 0
    # Walking back: the failed one (minute 5) and "old" (minute 10) waited before they left; the
    # edoc and the status of minute 20 left in minute 19; minute 50's two party routes left at 45.
    assert queue["party"][i5 - 1] == 3 and queue["party"][i10 - 1] == 4
    assert queue["party"][i20] == 6 and queue["party"][i20 - 1] == 4  # made in 20, left in 19
    assert queue["party"][i45] == 4 and queue["party"][i45 - 1] == 6 and queue["party"][i50] == 6
    assert queue["party"][0] == 4  # what waits now, plus what left since, less what was made since
    totals = {t.network: t for t in hour.totals}
    assert (totals["government"].sent, totals["party"].sent) == (3, 1)
    assert (totals["party"].received, totals["government"].received) == (4, 1)  # a, b, d, old: edocs
    assert totals["party"].failed == 1 and totals["party"].waiting == 2 and totals["front"].waiting == 1


def test_percentiles_are_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95 and percentile([7.0], 95) == 7


# --- the overview page ---------------------------------------------------------------------------


def doc(doc_id: str, **kw: object) -> DocumentRecord:
    base: dict[str, object] = dict(
        id=doc_id, kind="edoc", sender="000.00.00.G22", sender_network=Network.GOVERNMENT,
        document_id="G22,2026/11/22,1/VP", response_for=None, status_code=None, signed_digest="ab" * 32,
        signer="agency", subject="Về việc bí mật quốc gia", priority=Priority.HOA_TOC,
        classification=Classification.MAT, size=100, accepted_at=NOW - timedelta(minutes=3),
    )  # fmt: skip
    base.update(kw)
    return DocumentRecord(**base)  # type: ignore[arg-type]


def overview(**kw: object) -> str:
    base: dict[str, object] = dict(
        now=NOW, per_minute=[], activity=Activity(window(NOW)[0], [], [], [], True), recent=[], failing=[],
        at_risk=[], certificates=[], last_head=None, unsigned=0, operator="OPERATOR.ALICE",
    )  # fmt: skip
    base.update(kw)
    return pages.overview(pages.Overview(**base))  # type: ignore[arg-type]


def test_the_overview_puts_what_needs_attention_first_then_totals_charts_and_recent_documents() -> None:
    failing = [Failing("f" * 32, "failed", "party", None, "link down", 5, NOW)]
    cert = CertExpiry("000.00.00.G22", "sign", NOW + timedelta(days=3), 3.0)
    delivery = DeliveryRecord("a" * 32, "000.00.00.A01", "000.00.00.A01", (), Network.PARTY,
                              DeliveryState.DELIVERED, NOW, None)  # fmt: skip
    recent = [
        DocumentSummary(doc("a" * 32), (delivery,)),
        DocumentSummary(doc("b" * 32, kind="status", status_code="03", subject=None), ()),
        DocumentSummary(doc("c" * 32, classification=Classification.NONE, subject="Lịch họp"), ()),
    ]
    text = overview(failing=failing, certificates=[cert], recent=recent)
    ids = (
        "attention",
        "totals",
        "chart-target",
        "chart-priority",
        "chart-latency",
        "chart-queue",
        "recent",
        "audit",
    )
    order = [text.index(f'id="{x}"') for x in ids]
    assert order == sorted(order)
    assert "Needs attention" in text and '<span id="failing-count">1</span>' in text
    assert '<span id="expiring-count">1</span>' in text and '<span id="at-risk">0</span>' in text
    assert "sent (accepted from its agencies)" in text and "received (delivered to its agencies)" in text
    assert "by its sender's network" in text
    assert "government → party" in text and "status 03 Đã tiếp nhận" in text and "3 Hỏa tốc" in text
    # Never a subject in the list: a classified one is not stored, an unclassified one is not shown.
    assert "bí mật quốc gia" not in text and "Lịch họp" not in text
    assert text.count("<svg id=") == 4 and "<script" not in text


def test_numeric_headers_align_right_over_their_numbers() -> None:
    text = overview(
        activity=Activity(window(NOW)[0], [], [], [QueueDepth("party", 0, 4)], True),
        failing=[Failing("f" * 32, "failed", "party", None, "x", 5, NOW)],
    )
    root = etree.fromstring(text.encode(), etree.HTMLParser())
    for table in root.iter("table"):
        headers = table.findall("tr")[0].findall("th")
        for row in table.findall("tr")[1:]:
            for th, td in zip(headers, row.findall("td"), strict=True):
                assert ("n" in (th.get("class") or "").split()) == ("n" in (td.get("class") or "").split()), (
                    th.text,
                    td.text,
                )
    totals = root.find(".//div[@id='totals']/table")
    assert totals is not None
    assert [th.get("class") for th in totals.find("tr").findall("th")] == [None, "n", "n", "n", "n"]  # type: ignore[union-attr]


def test_nothing_to_attend_to_says_so() -> None:
    text = overview()
    assert "Nothing needs attention" in text and "nothing in the last hour" in text
    assert "no delivery in the last hour" in text
