"""The recall state machine read from the statuses that answer a document (gateway.exchange.recalls)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.vocabulary import Classification, Network, Priority
from gateway.exchange.ports import DocumentRecord
from gateway.exchange.recalls import RecallState, recall_state
from tests.conftest import A01, G22, H41

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def said(sender: str, code: str, n: int) -> DocumentRecord:
    return DocumentRecord(
        id=f"{n:032x}",
        kind="status",
        sender=sender,
        sender_network=Network.GOVERNMENT,
        document_id=None,
        response_for="f" * 32,
        status_code=code,
        signed_digest=f"{n:064x}",
        signer=f"agency:{sender}",
        subject=None,
        priority=Priority.THUONG,
        classification=Classification.NONE,
        size=100,
        accepted_at=T0 + timedelta(seconds=n),
    )


@pytest.mark.parametrize(
    ("said_in_order", "expected"),
    [
        pytest.param([], None, id="never-asked"),
        pytest.param([(A01, "15")], None, id="answer-with-nothing-asked"),
        pytest.param([(A01, "13")], None, id="a-13-from-a-recipient-asks-nothing"),
        pytest.param([(G22, "13")], RecallState.ASKED, id="asked"),
        pytest.param([(G22, "13"), (A01, "03")], RecallState.ASKED, id="other-status-is-no-answer"),
        pytest.param([(G22, "13"), (H41, "15")], RecallState.ASKED, id="another-recipient-agreed"),
        pytest.param([(G22, "13"), (A01, "15")], RecallState.AGREED, id="agreed"),
        pytest.param([(G22, "13"), (A01, "16")], RecallState.REFUSED, id="refused"),
        pytest.param([(G22, "13"), (A01, "16"), (G22, "13")], RecallState.ASKED, id="asked-again"),
        pytest.param([(G22, "13"), (A01, "16"), (A01, "15")], RecallState.REFUSED, id="refusal-stands"),
        pytest.param(
            [(G22, "13"), (A01, "16"), (G22, "13"), (A01, "15")], RecallState.AGREED, id="agreed-second-time"
        ),
        pytest.param([(G22, "13"), (A01, "15"), (G22, "13")], RecallState.AGREED, id="agreeing-is-final"),
    ],
)
def test_recall_state(said_in_order: list[tuple[str, str]], expected: RecallState | None) -> None:
    statuses = [said(who, code, n) for n, (who, code) in enumerate(said_in_order)]
    assert recall_state(statuses, sender=G22, recipient=A01) is expected
