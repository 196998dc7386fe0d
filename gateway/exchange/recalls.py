"""Where a recall stands, per recipient, read from the statuses that answer a document.

The axis carries a recall as statuses: the original's sender asks with ``13``, each recipient
answers ``15`` (agrees) or ``16`` (refuses). Nothing about a recall is stored apart from those
signed statuses, so the state is derived from them, the same way in intake, receipts and inbox.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from gateway.domain.vocabulary import StatusCode
from gateway.exchange.ports import DocumentRecord

RECALL_CODES = frozenset({StatusCode.RECALL_REQUESTED, StatusCode.RECALL_AGREED, StatusCode.RECALL_REFUSED})


class RecallState(enum.StrEnum):
    """One recipient's part of a recall."""

    ASKED = "asked"  # the sender sent 13; this recipient has not answered it yet
    AGREED = "agreed"  # answered 15: the document is recalled in its inbox (final)
    REFUSED = "refused"  # answered 16; a later 13 asks again


def recall_state(statuses: Iterable[DocumentRecord], *, sender: str, recipient: str) -> RecallState | None:
    """The recall state of ``recipient`` for a document sent by ``sender``; None if never asked.

    ``statuses`` answer the document, oldest first. A 15 or 16 counts only while a 13 is
    outstanding: the same codes also answer updates, and one sent with nothing asked must not
    recall anything. Agreeing is final: a recalled document does not come back.
    """
    state: RecallState | None = None
    for s in statuses:
        if s.status_code == StatusCode.RECALL_REQUESTED and s.sender == sender:
            if state is not RecallState.AGREED:
                state = RecallState.ASKED
        elif s.sender == recipient and state is RecallState.ASKED:
            if s.status_code == StatusCode.RECALL_AGREED:
                state = RecallState.AGREED
            elif s.status_code == StatusCode.RECALL_REFUSED:
                state = RecallState.REFUSED
    return state
