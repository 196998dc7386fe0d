"""Enumerations of the domain: networks, secrecy levels, urgency and status codes.

Values follow QCVN 102:2016 where it defines them (Priority, status codes) and
the Law on Protection of State Secrets for secrecy levels.
"""

from __future__ import annotations

import enum

from gateway.errors import BadRequest


class Network(enum.StrEnum):
    """The three separate networks a gateway node can serve."""

    PARTY = "party"  # mạng thông tin diện rộng của Đảng
    GOVERNMENT = "government"  # CPNet
    FRONT = "front"  # Mặt trận Tổ quốc


class Classification(enum.IntEnum):
    """Secrecy level of a document, and the clearance of an agency (highest it may receive)."""

    NONE = 0
    MAT = 1  # Mật
    TOI_MAT = 2  # Tối mật
    TUYET_MAT = 3  # Tuyệt mật

    @property
    def slug(self) -> str:
        return _CLASSIFICATION_SLUGS[self]

    @classmethod
    def from_slug(cls, text: str) -> Classification:
        """The level spelt ``text`` (``none``, ``mat``, ``toi-mat``, ``tuyet-mat``); raises ``BadRequest``."""
        for level, slug in _CLASSIFICATION_SLUGS.items():
            if slug == text:
                return level
        known = ", ".join(_CLASSIFICATION_SLUGS.values())
        raise BadRequest(f"unknown secrecy level {text!r} (expected one of: {known})")


_CLASSIFICATION_SLUGS = {
    Classification.NONE: "none",
    Classification.MAT: "mat",
    Classification.TOI_MAT: "toi-mat",
    Classification.TUYET_MAT: "tuyet-mat",
}


class Priority(enum.IntEnum):
    """edXML OtherInfo/Priority (độ khẩn)."""

    THUONG = 0  # Thường
    KHAN = 1  # Khẩn
    THUONG_KHAN = 2  # Thượng khẩn
    HOA_TOC = 3  # Hỏa tốc
    HOA_TOC_HEN_GIO = 4  # Hỏa tốc hẹn giờ


class StatusCode(enum.StrEnum):
    """Business status codes carried by edXML status packages."""

    ARRIVED = "01"  # Đã đến
    REFUSED = "02"  # Từ chối tiếp nhận
    ACCEPTED = "03"  # Đã tiếp nhận
    ASSIGNED = "04"  # Phân công
    IN_PROGRESS = "05"  # Đang xử lý
    DONE = "06"  # Hoàn thành
    RECALL_REQUESTED = "13"  # Yêu cầu lấy lại
    RECALL_AGREED = "15"  # Đồng ý lấy lại / cập nhật
    RECALL_REFUSED = "16"  # Từ chối lấy lại / cập nhật

    @property
    def from_sender(self) -> bool:
        """Only the sender of a document may ask to recall it; every other code is the recipient's."""
        return self is StatusCode.RECALL_REQUESTED


class DeliveryState(enum.StrEnum):
    """Transport state of one document for one recipient (after eDelivery AS4 / VXP).

    pending → delivered → fetched; pending → forwarded (another node holds the inbox);
    pending → quarantined | failed (an operator may re-drive a failed one to pending).
    """

    PENDING = "pending"  # accepted, not yet sealed/bridged/verified for the recipient's network
    DELIVERED = "delivered"  # in the recipient's inbox (READY_TO_PULL)
    FORWARDED = "forwarded"  # taken over, durably, by the node of the recipient's network
    FETCHED = "fetched"  # the recipient pulled it; a 01 receipt was issued
    QUARANTINED = "quarantined"  # a seal or signature failed on the way; never reaches an inbox
    FAILED = "failed"  # gave up (retry budget spent); an operator may re-drive it


def adapter_code(network: Network) -> str:
    """The CN of ``network``'s adapter certificates, e.g. ``ADAPTER.PARTY``."""
    return f"ADAPTER.{network.value.upper()}"
