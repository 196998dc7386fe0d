"""The XML Schemas and the package rules: packages shaped as the axis carries them pass, on both roots,
and each broken variant fails with its own code, naming its element."""

from __future__ import annotations

import base64
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from lxml import etree

import schemas_xml
from gateway.domain.edxml import BusinessDocType, Edoc, Status, read_package, validate_package
from gateway.errors import ClientError
from schemas_xml import DSIG_NS, EDXML_NS, GATEWAY_NS

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

# The SDKs' own signature: QCVN namespace, not XMLDSig; carried inert beside a real one.
LEGACY_SIGNATURE = """
    <edXML:Signature>
      <edXML:SignedInfo><edXML:SignatureMethod Algorithm="rsa-sha1"/></edXML:SignedInfo>
      <edXML:SignatureValue>Q09OU1RBTlQ=</edXML:SignatureValue>
    </edXML:Signature>"""

DOCUMENT_ID = "<edXML:DocumentId>000.00.00.H53,2025/06/30,1234/UBND-KT</edXML:DocumentId>"
PRIORITY = "<edXML:Priority>2</edXML:Priority>"
CLASSIFICATION = "<gw:Classification>mat</gw:Classification>"
DUE_DATE = "<edXML:DueDate>2025/07/15 17:00:00</edXML:DueDate>"
TRACE_TIMESTAMP = "<edXML:Timestamp>2025/06/30 09:15:00</edXML:Timestamp>"
SENDER = "<edXML:OrganId>000.00.00.H53</edXML:OrganId>"

# Orders as real packages have them: From's OrganId after its name, ResponseFor before
# SteeringType, the SDKs' extra elements (ApplicationType, ResponseForTask, Direction,
# ReplyFors, ReferenceCodes).
MESSAGE_HEADER = f"""
    <edXML:MessageHeader>
      <edXML:From>
        <edXML:OrganName>Văn phòng Ủy ban nhân dân tỉnh</edXML:OrganName>
        {SENDER}
        <edXML:OrganizationInCharge>Ủy ban nhân dân tỉnh Thái Nguyên</edXML:OrganizationInCharge>
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
        <edXML:OrganName>Bộ Nội vụ</edXML:OrganName>
        <edXML:OrganId>28.22.H17</edXML:OrganId>
      </edXML:To>
      {DOCUMENT_ID}
      <edXML:Code>
        <edXML:CodeNumber>1234</edXML:CodeNumber>
        <edXML:CodeNotation>UBND-KT</edXML:CodeNotation>
      </edXML:Code>
      <edXML:PromulgationInfo>
        <edXML:Place>Thái Nguyên</edXML:Place>
        <edXML:PromulgationDate>30/06/2025</edXML:PromulgationDate>
      </edXML:PromulgationInfo>
      <edXML:DocumentType>
        <edXML:Type>18</edXML:Type>
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
      {DUE_DATE}
      <edXML:OtherInfo>
        <edXML:SphereOfPromulgation>Liên thông văn bản quốc gia</edXML:SphereOfPromulgation>
        {PRIORITY}
        <edXML:TyperNotation>NVH</edXML:TyperNotation>
        <edXML:PromulgationAmount>5</edXML:PromulgationAmount>
        <edXML:PageAmount>3</edXML:PageAmount>
        <edXML:Direction>0</edXML:Direction>
        <edXML:Appendixes>
          <edXML:Appendix>Phụ lục I: Danh sách đơn vị hành chính cấp xã</edXML:Appendix>
        </edXML:Appendixes>
        <edXML:ReplyFors><edXML:ReplyFor>000.00.00.G22,2025/06/20,567/VPCP-TCCV</edXML:ReplyFor></edXML:ReplyFors>
        <edXML:ReferenceCodes/>
      </edXML:OtherInfo>
      <edXML:ResponseFor>
        <edXML:DocumentId>000.00.00.G22,2025/06/20,567/VPCP-TCCV</edXML:DocumentId>
        <edXML:OrganId>000.00.00.G22</edXML:OrganId>
        <edXML:Code>567/VPCP-TCCV</edXML:Code>
        <edXML:PromulgationDate>2025/06/20</edXML:PromulgationDate>
      </edXML:ResponseFor>
      <edXML:SteeringType>1</edXML:SteeringType>
      <edXML:ToPlaces>
        <edXML:Place>Như trên</edXML:Place>
        <edXML:Place>Lưu: VT, KT</edXML:Place>
      </edXML:ToPlaces>
      <edXML:ApplicationType>1</edXML:ApplicationType>
      <edXML:ResponseForTask><edXML:TaskCode>NV-2025-17</edXML:TaskCode></edXML:ResponseForTask>
      {CLASSIFICATION}
    </edXML:MessageHeader>"""

# Bussiness before the TraceHeader, its DocumentId first; a TraceHeader with no OrganId; an
# informational date that does not exist (as one real file has) and a test tenant's code.
TRACE_HEADER_LIST = f"""
    <edXML:TraceHeaderList id="th-1" version="1.0">
      <edXML:Bussiness>
        <edXML:DocumentId>000.00.00.H53,2025/06/01,1100/UBND-KT</edXML:DocumentId>
        <edXML:BussinessDocType>3</edXML:BussinessDocType>
        <edXML:BussinessDocReason>Thay thế văn bản ban hành nhầm</edXML:BussinessDocReason>
        <edXML:Paper>1</edXML:Paper>
        <edXML:StaffInfo>
          <edXML:Department>Phòng Kinh tế</edXML:Department>
          <edXML:Staff>Trần Thị Hương</edXML:Staff>
          <edXML:Email>huongtt@thainguyen.gov.vn</edXML:Email>
          <edXML:Mobile>0912345678</edXML:Mobile>
        </edXML:StaffInfo>
        <edXML:ReplacementInfoList>
          <edXML:ReplacementInfo>
            <edXML:DocumentId>000.00.00.H53,2025/06/01,1100/UBND-KT</edXML:DocumentId>
            <edXML:OrganIdList>
              <edXML:OrganId>000.00.00.G22</edXML:OrganId>
              <edXML:OrganId>01.02.G22</edXML:OrganId>
            </edXML:OrganIdList>
          </edXML:ReplacementInfo>
        </edXML:ReplacementInfoList>
      </edXML:Bussiness>
      <edXML:TraceHeader>
        {TRACE_TIMESTAMP}
      </edXML:TraceHeader>
      <edXML:TraceHeader>
        <edXML:OrganId>vxp.saas.03</edXML:OrganId>
        <edXML:Timestamp>2014/02/30 08:00:00</edXML:Timestamp>
      </edXML:TraceHeader>
    </edXML:TraceHeaderList>"""

REFERENCE_CONTENT_ID = "<edXML:ContentId>cid:1</edXML:ContentId>"
ATTACHMENT_CONTENT_ID = "<edXML:ContentId>1</edXML:ContentId>"  # some builders drop "cid:"
ATTACHMENT_NAME = "<edXML:AttachmentName>1234-UBND-KT.zip</edXML:AttachmentName>"
MANIFEST = f"""
    <edXML:edXMLManifest version="1.0">
      <edXML:Reference>
        {REFERENCE_CONTENT_ID}
        <edXML:ContentType>application/pdf</edXML:ContentType>
        <edXML:Description>Văn bản điện tử ký số</edXML:Description>
        <edXML:AttachmentName>1234-UBND-KT Về việc triển khai.pdf</edXML:AttachmentName>
      </edXML:Reference>
    </edXML:edXMLManifest>"""
ATTACHMENT_ENCODED = f"""
  <edXML:AttachmentEncoded>
    <edXML:Attachment>
      {ATTACHMENT_CONTENT_ID}
      {ATTACHMENT_NAME}
      <edXML:Description>Văn bản điện tử ký số</edXML:Description>
      <edXML:ContentType>application/zip</edXML:ContentType>
      <edXML:ContentTransferEncoded>UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==</edXML:ContentTransferEncoded>
      <edXML:FieldName>file</edXML:FieldName>
      <edXML:MimeType>application/zip</edXML:MimeType>
      <edXML:Format>zip</edXML:Format>
    </edXML:Attachment>
  </edXML:AttachmentEncoded>"""

HEADER = f"""<edXML:edXMLHeader>{MESSAGE_HEADER}{TRACE_HEADER_LIST}{LEGACY_SIGNATURE}{SIGNATURE}
  </edXML:edXMLHeader>"""

# The SDKs' shape: edXML root, AttachmentEncoded beside the envelope.
EDOC = f"""<edXML xmlns="{EDXML_NS}" {NAMESPACES}>
 <edXML:edXMLEnvelope>
  {HEADER}
  <edXML:edXMLBody>{MANIFEST}
  </edXML:edXMLBody>
 </edXML:edXMLEnvelope>{ATTACHMENT_ENCODED}
</edXML>"""

# The same package rooted at its envelope, attachments in the body.
EDOC_ENVELOPE = f"""<edXML:edXMLEnvelope {NAMESPACES}>
  {HEADER}
  <edXML:edXMLBody>{MANIFEST}{ATTACHMENT_ENCODED}
  </edXML:edXMLBody>
</edXML:edXMLEnvelope>"""

STATUS_CODE = "<edXML:StatusCode>03</edXML:StatusCode>"
STATUS_TIMESTAMP = "<edXML:Timestamp>2025/06/30 10:02:45</edXML:Timestamp>"
DELIVERED_DIGEST = base64.b64encode(hashlib.sha256(EDOC.encode()).digest()).decode("ascii")
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
DELIVERED_DIGEST_ELEMENT = f'<gw:DeliveredDigest Algorithm="{SHA256}">{DELIVERED_DIGEST}</gw:DeliveredDigest>'

# The axis's status: a MessageHeader with no To; the addressee is ResponseFor/OrganId.
STATUS_HEADER = f"""
    <edXML:MessageHeader>
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
      <edXML:StaffInfo>
        <edXML:Department>Phòng Hành chính</edXML:Department>
        <edXML:Staff>Lê Minh Đức</edXML:Staff>
      </edXML:StaffInfo>
      {STATUS_CODE}
      <edXML:Description>Đã tiếp nhận văn bản, chuyển Vụ Tổ chức công vụ xử lý</edXML:Description>
      {STATUS_TIMESTAMP}
      {DELIVERED_DIGEST_ELEMENT}
    </edXML:MessageHeader>"""

STATUS = f"""<?xml version="1.0" encoding="UTF-8"?>
<edXML xmlns="{EDXML_NS}" {NAMESPACES}>
 <edXML:edXMLEnvelope>
  <edXML:edXMLHeader>{STATUS_HEADER}{SIGNATURE}
  </edXML:edXMLHeader>
 </edXML:edXMLEnvelope>
</edXML>"""

RECIPIENTS = """
    <gw:Recipient>000.00.00.G22</gw:Recipient>
    <gw:Recipient addressedTo="000.00.00.G09">000.00.00.G12</gw:Recipient>"""
ROUTING_PRIORITY = "<gw:Priority>2</gw:Priority>"
PACKAGE_DIGEST = base64.b64encode(hashlib.sha256(b"package bytes as carried").digest()).decode("ascii")
PREVIOUS_SEAL = base64.b64encode(hashlib.sha256(b"c2lnbmF0dXJl").digest()).decode("ascii")
HOP_AT = 'at="2025-06-30T02:15:01.123456Z"'


def _transfer(form: str) -> str:
    """A sealed transfer header; the package travels beside it, named by digest, size and form."""
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
  <gw:Package>
    <gw:Digest Algorithm="{SHA256}">{PACKAGE_DIGEST}</gw:Digest>
    <gw:Size>52428800</gw:Size><gw:Form>{form}</gw:Form>
  </gw:Package>
</gw:Transfer>"""


TRANSFER = _transfer("signed")
ENCRYPTED_TRANSFER = _transfer("encrypted")


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


def _root(document: str) -> etree._Element:
    return etree.fromstring(document.encode("utf-8"), _PARSER)


def _validate_transfer(document: str) -> tuple[bool, str]:
    schema = schemas_xml.transfer_schema()
    valid = schema.validate(_root(document))
    return valid, str(schema.error_log)


def _refusal(document: str) -> ClientError:
    with pytest.raises(ClientError) as caught:
        validate_package(_root(document))
    return caught.value


# --- valid documents -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(EDOC, id="edoc-sdk-root"),
        pytest.param(EDOC_ENVELOPE, id="edoc-envelope-root"),
        pytest.param(STATUS, id="status"),
        pytest.param(_swap(EDOC, CLASSIFICATION, ""), id="edoc-without-classification"),
        pytest.param(_swap(EDOC, DUE_DATE, "<edXML:DueDate></edXML:DueDate>"), id="empty-DueDate"),
        pytest.param(_swap(EDOC, DUE_DATE, "<edXML:DueDate>15/07/2025</edXML:DueDate>"), id="DueDate-dd/MM"),
        pytest.param(
            _swap(EDOC, DUE_DATE, "<edXML:DueDate>2025-07-15 08:30:00</edXML:DueDate>"), id="DueDate-iso"
        ),
        pytest.param(_swap(EDOC, LEGACY_SIGNATURE, ""), id="edoc-without-legacy-signature"),
        pytest.param(
            _swap(STATUS, STATUS_CODE, "<edXML:StatusCode>13</edXML:StatusCode>"), id="status-recall"
        ),
        pytest.param(
            _swap(
                _swap(EDOC, "<edXML:Bussiness>", "<edXML:Business>"),
                "</edXML:Bussiness>",
                "</edXML:Business>",
            ),
            id="Business-spelling",
        ),
    ],
)
def test_valid_packages_pass(document: str) -> None:
    validate_package(_root(document))


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(TRANSFER, id="transfer"),
        pytest.param(ENCRYPTED_TRANSFER, id="transfer-encrypted-package"),
    ],
)
def test_valid_transfers_pass(document: str) -> None:
    valid, errors = _validate_transfer(document)
    assert valid, errors
    assert errors == ""


def test_both_roots_mean_the_same() -> None:
    sdk, envelope = read_package(_root(EDOC)), read_package(_root(EDOC_ENVELOPE))
    assert sdk == envelope
    assert isinstance(sdk, Edoc)
    assert sdk.recipients == ("000.00.00.G22", "28.22.H17")
    assert (sdk.priority, sdk.classification.slug, sdk.due) == (2, "mat", "2025/07/15 17:00:00")
    assert sdk.response_for is not None and sdk.response_for.organ == "000.00.00.G22"
    assert sdk.business.doc_type is BusinessDocType.REPLACE
    assert sdk.business.replacements[0].organs == ("000.00.00.G22", "01.02.G22")


def test_status_reads_its_addressee_from_response_for() -> None:
    status = read_package(_root(STATUS))
    assert isinstance(status, Status)
    assert (status.sender, status.about_organ, status.code.value) == ("000.00.00.G22", "000.00.00.H53", "03")
    assert status.delivered_digest == DELIVERED_DIGEST


def test_length_bounds_count_characters_not_bytes() -> None:
    subject = "<edXML:Subject>Về việc triển khai chính quyền địa phương hai cấp</edXML:Subject>"
    validate_package(_root(_swap(EDOC, subject, f"<edXML:Subject>{'ệ' * 2000}</edXML:Subject>")))
    refused = _refusal(_swap(EDOC, subject, f"<edXML:Subject>{'ệ' * 2001}</edXML:Subject>"))
    assert refused.code == "schema_invalid"
    assert "Subject" in refused.message


# --- refused packages --------------------------------------------------------------------------


BAD_CLASSIFICATION = "<gw:Classification>secret</gw:Classification>"
DIGEST_WITHOUT_ALGORITHM = DELIVERED_DIGEST_ELEMENT.replace(" Algorithm=", " Method=")


@pytest.mark.parametrize(
    ("document", "code", "named"),
    [
        pytest.param(_swap(EDOC, DOCUMENT_ID, ""), "schema_invalid", "DocumentId", id="missing-DocumentId"),
        pytest.param(
            _swap(EDOC, DOCUMENT_ID, "<edXML:DocumentId>  </edXML:DocumentId>"),
            "schema_invalid",
            "DocumentId",
            id="blank-DocumentId",
        ),
        pytest.param(
            _swap(EDOC, DOCUMENT_ID, DOCUMENT_ID * 2), "duplicate_field", "DocumentId", id="two-DocumentIds"
        ),
        pytest.param(
            _swap(EDOC, CLASSIFICATION, "<gw:Classification>none</gw:Classification>" + CLASSIFICATION),
            "duplicate_field",
            "gw:Classification",
            id="two-Classifications",
        ),
        pytest.param(_swap(EDOC, PRIORITY, PRIORITY * 2), "duplicate_field", "Priority", id="two-Priorities"),
        pytest.param(_swap(EDOC, DUE_DATE, DUE_DATE * 2), "duplicate_field", "DueDate", id="two-DueDates"),
        pytest.param(
            _swap(EDOC, SENDER, SENDER + "<edXML:OrganId>000.00.00.G22</edXML:OrganId>"),
            "duplicate_field",
            "OrganId",
            id="From-with-two-OrganIds",
        ),
        pytest.param(
            _swap(EDOC, DUE_DATE, "<edXML:DueDate>2025/02/30</edXML:DueDate>"),
            "invalid_date",
            "DueDate (2025/02/30)",
            id="impossible-DueDate",
        ),
        pytest.param(
            _swap(EDOC, DUE_DATE, "<edXML:DueDate>next Monday</edXML:DueDate>"),
            "invalid_date",
            "DueDate",
            id="DueDate-not-a-date",
        ),
        pytest.param(
            _swap(STATUS, STATUS_TIMESTAMP, "<edXML:Timestamp>2025/06/31 10:02:45</edXML:Timestamp>"),
            "invalid_date",
            "Timestamp",
            id="impossible-status-Timestamp",
        ),
        pytest.param(
            _swap(STATUS, STATUS_CODE, "<edXML:StatusCode>07</edXML:StatusCode>"),
            "schema_invalid",
            _e("StatusCode"),
            id="unknown-StatusCode",
        ),
        pytest.param(
            _swap(STATUS, STATUS_CODE, "<edXML:StatusCode>3</edXML:StatusCode>"),
            "schema_invalid",
            _e("StatusCode"),
            id="StatusCode-not-two-digits",
        ),
        pytest.param(
            _swap(
                STATUS,
                "<edXML:MessageHeader>",
                "<edXML:MessageHeader><edXML:To><edXML:OrganId>000.00.00.A01</edXML:OrganId></edXML:To>",
            ),
            "schema_invalid",
            "ResponseFor/OrganId",
            id="status-with-To",
        ),
        pytest.param(
            _swap(EDOC, PRIORITY, "<edXML:Priority>9</edXML:Priority>"),
            "schema_invalid",
            _e("Priority"),
            id="edoc-Priority-9",
        ),
        pytest.param(
            _swap(EDOC, SENDER, "<edXML:OrganId> 000.00.00.H53</edXML:OrganId>"),
            "invalid_agency_code",
            "From/edXML:OrganId",
            id="agency-code-with-space",
        ),
        pytest.param(
            _swap(EDOC, SENDER, "<edXML:OrganId>vxp.saas.03</edXML:OrganId>"),
            "invalid_agency_code",
            "From/edXML:OrganId",
            id="test-tenant-as-sender",
        ),
        pytest.param(
            _swap(EDOC, "<edXML:OrganId>28.22.H17</edXML:OrganId>", "<edXML:OrganId>null</edXML:OrganId>"),
            "invalid_agency_code",
            "To[2]",
            id="null-as-recipient",
        ),
        pytest.param(
            _swap(EDOC, CLASSIFICATION, "<edXML:Secret>x</edXML:Secret>"),
            "schema_invalid",
            _e("Secret"),
            id="unknown-edXML-element-in-MessageHeader",
        ),
        pytest.param(
            _swap(EDOC, CLASSIFICATION, "<gw:Secret>x</gw:Secret>"),
            "schema_invalid",
            _g("Secret"),
            id="undeclared-gw-element",
        ),
        pytest.param(
            _swap(
                EDOC,
                "<edXML:ReferenceCodes/>",
                f"<edXML:ReferenceCodes>{CLASSIFICATION}</edXML:ReferenceCodes>",
            ),
            "schema_invalid",
            _g("Classification"),
            id="Classification-hidden-in-inert-content",
        ),
        pytest.param(
            _swap(EDOC, CLASSIFICATION, BAD_CLASSIFICATION),
            "schema_invalid",
            _g("Classification"),
            id="unknown-Classification",
        ),
        pytest.param(
            _swap(STATUS, DELIVERED_DIGEST_ELEMENT, DIGEST_WITHOUT_ALGORITHM),
            "schema_invalid",
            "DeliveredDigest",
            id="DeliveredDigest-without-Algorithm",
        ),
        pytest.param(
            _swap(EDOC, '<edXML:edXMLManifest version="1.0">', '<edXML:edXMLManifest version="2.0">'),
            "schema_invalid",
            "edXMLManifest",
            id="manifest-version-2",
        ),
        pytest.param(
            _swap(EDOC, "</edXML:edXMLBody>", f"{ATTACHMENT_ENCODED}</edXML:edXMLBody>"),
            "schema_invalid",
            _e("AttachmentEncoded"),
            id="sdk-root-with-attachments-in-the-body-too",
        ),
        pytest.param(
            _swap(EDOC, ATTACHMENT_CONTENT_ID, "<edXML:ContentId>cid:2</edXML:ContentId>"),
            "attachment_mismatch",
            "manifest Reference 1 (ContentId cid:1)",
            id="manifest-names-a-missing-attachment",
        ),
        pytest.param(
            _swap(EDOC, ATTACHMENT_NAME, "<edXML:AttachmentName>../../etc/cron.d/x</edXML:AttachmentName>"),
            "invalid_attachment_name",
            "Attachment 1",
            id="attachment-name-is-a-path",
        ),
    ],
)
def test_refused_packages_name_their_field(document: str, code: str, named: str) -> None:
    refused = _refusal(document)
    assert (refused.code, refused.status) == (code, 400), refused.message
    assert named in refused.message, refused.message


@pytest.mark.parametrize("spelling", ["Business", "Bussiness"])
def test_both_spellings_of_Bussiness_at_once_is_a_duplicate(spelling: str) -> None:
    second = f"<edXML:{spelling}><edXML:BussinessDocType>0</edXML:BussinessDocType></edXML:{spelling}>"
    refused = _refusal(_swap(EDOC, "</edXML:TraceHeaderList>", second + "</edXML:TraceHeaderList>"))
    assert refused.code == "duplicate_field"


def test_refusals_never_echo_a_classified_subject() -> None:
    secret = "Kế hoạch bảo vệ mục tiêu trọng yếu"
    subject = "<edXML:Subject>Về việc triển khai chính quyền địa phương hai cấp</edXML:Subject>"
    document = _swap(EDOC, subject, f"<edXML:Subject>{secret * 80}</edXML:Subject>")
    assert secret not in _refusal(document).message


# --- refused transfers (schema only) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "element"),
    [
        pytest.param(
            _swap(TRANSFER, ROUTING_PRIORITY, "<gw:Priority>9</gw:Priority>"),
            _g("Priority"),
            id="transfer-Priority-9",
        ),
        pytest.param(_swap(TRANSFER, RECIPIENTS, ""), _g("Recipient"), id="no-Recipient"),
        pytest.param(
            _swap(TRANSFER, RECIPIENTS, "<gw:Recipient>000.00.00.g22</gw:Recipient>"),
            _g("Recipient"),
            id="lowercase-agency-code",
        ),
        pytest.param(
            _swap(TRANSFER, HOP_AT, 'at="2025-06-30T02:15:01"'),
            "attribute 'at'",
            id="Hop-time-without-zone",
        ),
        pytest.param(  # the package travels beside the header, never inside it (issue 13)
            _swap(
                TRANSFER,
                "<gw:Form>signed</gw:Form>",
                "<gw:Form>signed</gw:Form><gw:Encoded>AA==</gw:Encoded>",
            ),
            _g("Encoded"),
            id="package-bytes-inside-the-header",
        ),
        pytest.param(
            _swap(TRANSFER, "<gw:Form>signed</gw:Form>", "<gw:Form>zipped</gw:Form>"),
            _g("Form"),
            id="unknown-package-form",
        ),
        pytest.param(
            _swap(TRANSFER, "<gw:Size>52428800</gw:Size>", "<gw:Size>-1</gw:Size>"),
            _g("Size"),
            id="negative-size",
        ),
    ],
)
def test_invalid_transfers_fail_naming_the_element(document: str, element: str) -> None:
    valid, errors = _validate_transfer(document)
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
