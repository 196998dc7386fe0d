"""The XML Schemas: real-looking packages pass, and each broken variant fails naming its element."""

from __future__ import annotations

import base64
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from lxml import etree

import schemas_xml
from schemas_xml import DSIG_NS, EDXML_NS, GATEWAY_NS, XENC_NS

NAMESPACES = f'xmlns:edXML="{EDXML_NS}" xmlns:gw="{GATEWAY_NS}" xmlns:ds="{DSIG_NS}"'

SIGNATURE = """
    <ds:Signature>
      <ds:SignedInfo>
        <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
        <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
        <ds:Reference URI="">
          <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
          <ds:DigestValue>47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=</ds:DigestValue>
        </ds:Reference>
      </ds:SignedInfo>
      <ds:SignatureValue>c2lnbmF0dXJl</ds:SignatureValue>
    </ds:Signature>"""

DOCUMENT_ID = "<edXML:DocumentId>000.00.00.H53,2025/06/30,1234/UBND-KT</edXML:DocumentId>"
PRIORITY = "<edXML:Priority>2</edXML:Priority>"
CLASSIFICATION = "<gw:Classification>mat</gw:Classification>"
TRACE_TIMESTAMP = "<edXML:Timestamp>2025/06/30 09:15:00</edXML:Timestamp>"

MESSAGE_HEADER = f"""
    <edXML:MessageHeader>
      <edXML:From>
        <edXML:OrganId>000.00.00.H53</edXML:OrganId>
        <edXML:OrganizationInCharge>Ủy ban nhân dân tỉnh Thái Nguyên</edXML:OrganizationInCharge>
        <edXML:OrganName>Văn phòng Ủy ban nhân dân tỉnh</edXML:OrganName>
        <edXML:OrganAdd>Số 18 đường Nha Trang, phường Phan Đình Phùng</edXML:OrganAdd>
        <edXML:Email>vanphong@thainguyen.gov.vn</edXML:Email>
        <edXML:Telephone>0208 3855 665</edXML:Telephone>
        <edXML:Fax>0208 3855 666</edXML:Fax>
        <edXML:Website>https://thainguyen.gov.vn</edXML:Website>
      </edXML:From>
      <edXML:To>
        <edXML:OrganId>000.00.00.G22</edXML:OrganId>
        <edXML:OrganName>Văn phòng Chính phủ</edXML:OrganName>
      </edXML:To>
      <edXML:To>
        <edXML:OrganId>000.00.00.G12</edXML:OrganId>
        <edXML:OrganName>Bộ Nội vụ</edXML:OrganName>
      </edXML:To>
      {DOCUMENT_ID}
      <edXML:Code>
        <edXML:CodeNumber>1234</edXML:CodeNumber>
        <edXML:CodeNotation>UBND-KT</edXML:CodeNotation>
      </edXML:Code>
      <edXML:PromulgationInfo>
        <edXML:Place>Thái Nguyên</edXML:Place>
        <edXML:PromulgationDate>2025/06/30</edXML:PromulgationDate>
      </edXML:PromulgationInfo>
      <edXML:DocumentType>
        <edXML:Type>1</edXML:Type>
        <edXML:TypeDetail>2</edXML:TypeDetail>
        <edXML:TypeName>Công văn</edXML:TypeName>
      </edXML:DocumentType>
      <edXML:Subject>Về việc triển khai chính quyền địa phương hai cấp</edXML:Subject>
      <edXML:Content>Thực hiện Nghị quyết số 202/2025/QH15, đề nghị các cơ quan khẩn trương…</edXML:Content>
      <edXML:SignerInfo>
        <edXML:Competence>TM. Ủy ban nhân dân</edXML:Competence>
        <edXML:Position>Chủ tịch</edXML:Position>
        <edXML:FullName>Nguyễn Văn Hùng</edXML:FullName>
      </edXML:SignerInfo>
      <edXML:DueDate>2025/07/15 17:00:00</edXML:DueDate>
      <edXML:OtherInfo>
        {PRIORITY}
        <edXML:SphereOfPromulgation>Liên thông văn bản quốc gia</edXML:SphereOfPromulgation>
        <edXML:TyperNotation>NVH</edXML:TyperNotation>
        <edXML:PromulgationAmount>5</edXML:PromulgationAmount>
        <edXML:PageAmount>3</edXML:PageAmount>
        <edXML:Direction>Đề nghị các đơn vị phối hợp thực hiện</edXML:Direction>
        <edXML:Appendixes>
          <edXML:Appendix>Phụ lục I: Danh sách đơn vị hành chính cấp xã</edXML:Appendix>
        </edXML:Appendixes>
      </edXML:OtherInfo>
      <edXML:SteeringType>1</edXML:SteeringType>
      <edXML:ToPlaces>
        <edXML:Place>Như trên</edXML:Place>
        <edXML:Place>Lưu: VT, KT</edXML:Place>
      </edXML:ToPlaces>
      <edXML:ResponseFor>
        <edXML:OrganId>000.00.00.G22</edXML:OrganId>
        <edXML:Code>567/VPCP-TCCV</edXML:Code>
        <edXML:PromulgationDate>2025/06/20</edXML:PromulgationDate>
        <edXML:DocumentId>000.00.00.G22,2025/06/20,567/VPCP-TCCV</edXML:DocumentId>
      </edXML:ResponseFor>
      {CLASSIFICATION}
    </edXML:MessageHeader>"""

TRACE_HEADER_LIST = f"""
    <edXML:TraceHeaderList>
      <edXML:TraceHeader>
        <edXML:OrganId>000.00.00.H53</edXML:OrganId>
        {TRACE_TIMESTAMP}
      </edXML:TraceHeader>
      <edXML:Bussiness>
        <edXML:BussinessDocType>0</edXML:BussinessDocType>
        <edXML:BussinessDocReason>Gửi mới</edXML:BussinessDocReason>
        <edXML:Paper>1</edXML:Paper>
        <edXML:StaffInfo>
          <edXML:Department>Phòng Kinh tế</edXML:Department>
          <edXML:Staff>Trần Thị Hương</edXML:Staff>
          <edXML:Email>huongtt@thainguyen.gov.vn</edXML:Email>
          <edXML:Mobile>0912345678</edXML:Mobile>
        </edXML:StaffInfo>
      </edXML:Bussiness>
    </edXML:TraceHeaderList>"""

BODY = """
  <edXML:edXMLBody>
    <edXML:edXMLManifest version="1.0">
      <edXML:Reference>
        <edXML:ContentId>cid:1</edXML:ContentId>
        <edXML:ContentType>application/pdf</edXML:ContentType>
        <edXML:Description>Văn bản điện tử ký số</edXML:Description>
        <edXML:AttachmentName>1234-UBND-KT Về việc triển khai.pdf</edXML:AttachmentName>
      </edXML:Reference>
    </edXML:edXMLManifest>
    <edXML:AttachmentEncoded>
      <edXML:Attachment>
        <edXML:ContentId>cid:1</edXML:ContentId>
        <edXML:AttachmentName>1234-UBND-KT Về việc triển khai.pdf</edXML:AttachmentName>
        <edXML:Description>Văn bản điện tử ký số</edXML:Description>
        <edXML:ContentType>application/pdf</edXML:ContentType>
        <edXML:ContentTransferEncoded>JVBERi0xLjQKJcOkw7zDtsOfCg==</edXML:ContentTransferEncoded>
      </edXML:Attachment>
    </edXML:AttachmentEncoded>
  </edXML:edXMLBody>"""

# No XML declaration: the same text is embedded in a Transfer below.
EDOC = f"""<edXML:edXMLEnvelope {NAMESPACES}>
  <edXML:edXMLHeader>{MESSAGE_HEADER}{TRACE_HEADER_LIST}{SIGNATURE}
  </edXML:edXMLHeader>{BODY}
</edXML:edXMLEnvelope>"""

STATUS_CODE = "<edXML:StatusCode>03</edXML:StatusCode>"
STATUS_TIMESTAMP = "<edXML:Timestamp>2025/06/30 10:02:45</edXML:Timestamp>"
DELIVERED_DIGEST = base64.b64encode(hashlib.sha256(EDOC.encode()).digest()).decode("ascii")
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
DELIVERED_DIGEST_ELEMENT = f'<gw:DeliveredDigest Algorithm="{SHA256}">{DELIVERED_DIGEST}</gw:DeliveredDigest>'

STATUS_ELEMENT = f"""
    <edXML:Status>
      <edXML:From>
        <edXML:OrganId>000.00.00.G22</edXML:OrganId>
        <edXML:OrganName>Văn phòng Chính phủ</edXML:OrganName>
      </edXML:From>
      <edXML:ResponseFor>
        <edXML:OrganId>000.00.00.H53</edXML:OrganId>
        <edXML:Code>1234/UBND-KT</edXML:Code>
        <edXML:PromulgationDate>2025/06/30</edXML:PromulgationDate>
        <edXML:DocumentId>000.00.00.H53,2025/06/30,1234/UBND-KT</edXML:DocumentId>
      </edXML:ResponseFor>
      {STATUS_CODE}
      <edXML:Description>Đã tiếp nhận văn bản, chuyển Vụ Tổ chức công vụ xử lý</edXML:Description>
      {STATUS_TIMESTAMP}
      <edXML:StaffInfo>
        <edXML:Department>Phòng Hành chính</edXML:Department>
        <edXML:Staff>Lê Minh Đức</edXML:Staff>
      </edXML:StaffInfo>
      {DELIVERED_DIGEST_ELEMENT}
    </edXML:Status>"""

STATUS = f"""<?xml version="1.0" encoding="UTF-8"?>
<edXML:edXMLEnvelope {NAMESPACES}>
  <edXML:edXMLHeader>{STATUS_ELEMENT}{SIGNATURE}
  </edXML:edXMLHeader>
</edXML:edXMLEnvelope>"""

RECIPIENTS = """
    <gw:Recipient>000.00.00.G22</gw:Recipient>
    <gw:Recipient addressedTo="000.00.00.G09">000.00.00.G12</gw:Recipient>"""
ROUTING_PRIORITY = "<gw:Priority>2</gw:Priority>"
PACKAGE_DIGEST = base64.b64encode(hashlib.sha256(b"package bytes as carried").digest()).decode("ascii")
PREVIOUS_SEAL = base64.b64encode(hashlib.sha256(b"c2lnbmF0dXJl").digest()).decode("ascii")
HOP_AT = 'at="2025-06-30T02:15:01.123456Z"'


def _transfer(package: str) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<gw:Transfer xmlns:gw="{GATEWAY_NS}" xmlns:ds="{DSIG_NS}">{SIGNATURE}
  <gw:Routing>
    <gw:TransferId>0197c1a2b3c4d5e6f708192a3b4c5d6e</gw:TransferId>
    <gw:Kind>edoc</gw:Kind>
    <gw:From>000.00.00.H53</gw:From>
    <gw:SourceNetwork>party</gw:SourceNetwork>
    <gw:TargetNetwork>government</gw:TargetNetwork>{RECIPIENTS}
    <gw:Classification>mat</gw:Classification>
    {ROUTING_PRIORITY}
    <gw:PackageDigest Algorithm="{SHA256}">{PACKAGE_DIGEST}</gw:PackageDigest>
  </gw:Routing>
  <gw:Hops>
    <gw:Hop network="party" adapter="ADAPTER.PARTY" action="sealed" {HOP_AT}/>
    <gw:Hop network="government" adapter="ADAPTER.GOVERNMENT" action="bridged"
            at="2025-06-30T09:15:02+07:00" previousSeal="{PREVIOUS_SEAL}"/>
  </gw:Hops>
  <gw:Package>{package}</gw:Package>
</gw:Transfer>"""


TRANSFER = _transfer(EDOC)
ENCRYPTED_TRANSFER = _transfer(
    f"""<xenc:EncryptedData xmlns:xenc="{XENC_NS}" Type="{XENC_NS}Element">
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"/>
      <xenc:CipherData><xenc:CipherValue>AAECAwQFBgcICQ==</xenc:CipherValue></xenc:CipherData>
    </xenc:EncryptedData>"""
)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _swap(document: str, old: str, new: str) -> str:
    """``document`` with ``old`` replaced; fails loudly if ``old`` is not there exactly once."""
    assert document.count(old) == 1, f"test bug: {old!r} occurs {document.count(old)} times"
    return document.replace(old, new)


def _e(tag: str) -> str:
    """How libxml2's messages name an edXML element."""
    return f"{{{EDXML_NS}}}{tag}"


def _g(tag: str) -> str:
    return f"{{{GATEWAY_NS}}}{tag}"


def _schema(which: str) -> etree.XMLSchema:
    return schemas_xml.transfer_schema() if which == "transfer" else schemas_xml.package_schema()


def _validate(which: str, document: str) -> tuple[bool, str]:
    schema = _schema(which)
    root = etree.fromstring(document.encode("utf-8"), _PARSER)
    valid = schema.validate(root)
    return valid, str(schema.error_log)


# --- valid documents -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "document"),
    [
        pytest.param("package", EDOC, id="edoc"),
        pytest.param("package", STATUS, id="status"),
        pytest.param("transfer", TRANSFER, id="transfer"),
        pytest.param("transfer", ENCRYPTED_TRANSFER, id="transfer-encrypted-package"),
        pytest.param("package", _swap(EDOC, CLASSIFICATION, ""), id="edoc-without-classification"),
        pytest.param(
            "package",
            _swap(STATUS, STATUS_CODE, "<edXML:StatusCode>13</edXML:StatusCode>"),
            id="status-recall",
        ),
    ],
)
def test_valid_documents_pass(which: str, document: str) -> None:
    valid, errors = _validate(which, document)
    assert valid, errors
    assert errors == ""


def test_edoc_sample_is_what_the_brief_describes() -> None:
    # Guards the fixture itself: two To recipients, one attachment, Vietnamese subject.
    root = etree.fromstring(EDOC.encode("utf-8"), _PARSER)
    ns = {"edXML": EDXML_NS}
    assert len(root.findall("edXML:edXMLHeader/edXML:MessageHeader/edXML:To", ns)) == 2
    assert len(root.findall("edXML:edXMLBody/edXML:AttachmentEncoded/edXML:Attachment", ns)) == 1
    subject = root.findtext("edXML:edXMLHeader/edXML:MessageHeader/edXML:Subject", namespaces=ns)
    assert subject == "Về việc triển khai chính quyền địa phương hai cấp"


def test_length_bounds_count_characters_not_bytes() -> None:
    subject = "<edXML:Subject>Về việc triển khai chính quyền địa phương hai cấp</edXML:Subject>"
    at_limit = _swap(EDOC, subject, f"<edXML:Subject>{'ệ' * 2000}</edXML:Subject>")
    over_limit = _swap(EDOC, subject, f"<edXML:Subject>{'ệ' * 2001}</edXML:Subject>")
    assert _validate("package", at_limit)[0]
    valid, errors = _validate("package", over_limit)
    assert not valid
    assert "Subject" in errors


# --- rejected documents ----------------------------------------------------------------------

G12 = "<edXML:OrganId>000.00.00.G12</edXML:OrganId>"
BAD_TRACE_TIMESTAMP = "<edXML:Timestamp>2025-06-30T09:15:00</edXML:Timestamp>"
BAD_STATUS_TIMESTAMP = "<edXML:Timestamp>2025/06/30</edXML:Timestamp>"
BAD_CLASSIFICATION = "<gw:Classification>secret</gw:Classification>"
DIGEST_WITHOUT_ALGORITHM = DELIVERED_DIGEST_ELEMENT.replace(" Algorithm=", " Method=")


@pytest.mark.parametrize(
    ("which", "document", "element"),
    [
        pytest.param("package", _swap(EDOC, DOCUMENT_ID, ""), _e("DocumentId"), id="missing-DocumentId"),
        pytest.param(
            "package",
            _swap(EDOC, DOCUMENT_ID, "<edXML:DocumentId>  </edXML:DocumentId>"),
            _e("DocumentId"),
            id="blank-DocumentId",
        ),
        pytest.param(
            "package",
            _swap(STATUS, STATUS_CODE, "<edXML:StatusCode>07</edXML:StatusCode>"),
            _e("StatusCode"),
            id="unknown-StatusCode",
        ),
        pytest.param(
            "package",
            _swap(STATUS, STATUS_CODE, "<edXML:StatusCode>3</edXML:StatusCode>"),
            _e("StatusCode"),
            id="StatusCode-not-two-digits",
        ),
        pytest.param(
            "package",
            _swap(EDOC, PRIORITY, "<edXML:Priority>9</edXML:Priority>"),
            _e("Priority"),
            id="edoc-Priority-9",
        ),
        pytest.param(
            "transfer",
            _swap(TRANSFER, ROUTING_PRIORITY, "<gw:Priority>9</gw:Priority>"),
            _g("Priority"),
            id="transfer-Priority-9",
        ),
        pytest.param("transfer", _swap(TRANSFER, RECIPIENTS, ""), _g("Recipient"), id="no-Recipient"),
        pytest.param(
            "transfer",
            _swap(TRANSFER, RECIPIENTS, "<gw:Recipient>000.00.00.g22</gw:Recipient>"),
            _g("Recipient"),
            id="lowercase-agency-code",
        ),
        pytest.param(
            "package",
            _swap(EDOC, G12, "<edXML:OrganId> 000.00.00.G12</edXML:OrganId>"),
            _e("OrganId"),
            id="agency-code-with-space",
        ),
        pytest.param(
            "package",
            _swap(EDOC, CLASSIFICATION, "<edXML:Secret>x</edXML:Secret>"),
            _e("Secret"),
            id="unknown-edXML-element-in-MessageHeader",
        ),
        pytest.param(
            "package",
            _swap(EDOC, CLASSIFICATION, "<gw:Secret>x</gw:Secret>"),
            _g("Secret"),
            id="undeclared-gw-element-in-extension-slot",
        ),
        pytest.param(
            "package",
            _swap(EDOC, CLASSIFICATION, BAD_CLASSIFICATION),
            _g("Classification"),
            id="unknown-Classification",
        ),
        pytest.param(
            "package",
            _swap(EDOC, TRACE_HEADER_LIST, STATUS_ELEMENT),
            f"'{_e('Status')}'",
            id="MessageHeader-and-Status",
        ),  # quoted: not StatusCode
        pytest.param(
            "package",
            _swap(EDOC, TRACE_TIMESTAMP, BAD_TRACE_TIMESTAMP),
            _e("Timestamp"),
            id="bad-TraceHeader-Timestamp",
        ),
        pytest.param(
            "package",
            _swap(STATUS, STATUS_TIMESTAMP, BAD_STATUS_TIMESTAMP),
            _e("Timestamp"),
            id="bad-Status-Timestamp",
        ),
        pytest.param(
            "package",
            _swap(STATUS, DELIVERED_DIGEST_ELEMENT, DIGEST_WITHOUT_ALGORITHM),
            "attribute 'Algorithm' is required",
            id="DeliveredDigest-without-Algorithm",
        ),
        pytest.param(
            "package",
            _swap(EDOC, 'version="1.0"', 'version="2.0"'),
            "attribute 'version'",
            id="manifest-version-2",
        ),
        pytest.param(
            "transfer",
            _swap(TRANSFER, HOP_AT, 'at="2025-06-30T02:15:01"'),
            "attribute 'at'",
            id="Hop-time-without-zone",
        ),
    ],
)
def test_invalid_documents_fail_naming_the_element(which: str, document: str, element: str) -> None:
    valid, errors = _validate(which, document)
    assert not valid
    assert element in errors, errors


# --- the loader ------------------------------------------------------------------------------


def test_schemas_are_built_once_even_when_first_asked_from_many_threads() -> None:
    schemas_xml._load.cache_clear()
    start = threading.Barrier(8)

    def load(_: int) -> tuple[etree.XMLSchema, etree.XMLSchema]:
        start.wait()
        return schemas_xml.package_schema(), schemas_xml.transfer_schema()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(load, range(8)))
    assert len({id(package) for package, _ in results}) == 1
    assert len({id(transfer) for _, transfer in results}) == 1
    assert results[0][0] is not results[0][1]
