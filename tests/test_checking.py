"""What the checkers act on: the facts of the tree the sender's signature verified.

``check_package`` reads a package once before its signature (to refuse it early) and uses that
reading afterwards only when verification left the tree as it was; a comment, which the
signature does not cover and verification drops, makes it read the verified tree again. Either
way the facts are the signed ones.
"""

from __future__ import annotations

import pytest

from gateway.domain.edxml import Edoc
from gateway.domain.xmlsafe import DEFAULT_LIMITS
from gateway.errors import SignatureRejected
from gateway.exchange.checking import check_package
from gateway.runtime.config import Config
from tests.conftest import A01, G22, make_package

SUBJECT = "Về việc sáp nhập xã"


def _subject(raw: bytes) -> str:
    package = check_package(raw, DEFAULT_LIMITS).package
    assert isinstance(package, Edoc)
    return package.subject


def test_the_facts_are_those_of_the_signed_package(config: Config) -> None:
    assert _subject(make_package(config, G22, [A01], subject=SUBJECT)) == SUBJECT


def test_a_comment_inside_a_signed_text_is_read_as_the_signature_saw_it(config: Config) -> None:
    raw = make_package(config, G22, [A01], subject=SUBJECT)
    # Comments are outside the signature: inserting one keeps it valid, and splits the text
    # node lxml would read before verification ("Về việc" alone).
    commented = raw.replace("Về việc ".encode(), "Về việc <!-- ghi chú -->".encode(), 1)
    assert commented != raw
    assert _subject(commented) == SUBJECT


def test_a_changed_text_is_still_refused(config: Config) -> None:
    raw = make_package(config, G22, [A01], subject=SUBJECT)
    with pytest.raises(SignatureRejected):
        check_package(raw.replace("sáp nhập".encode(), "giải thể".encode(), 1), DEFAULT_LIMITS)
