"""The gateway's exceptions.

Every error a client can cause is a ``ClientError`` subclass with exactly one
HTTP status and one stable machine-readable ``code``; the API turns it into a
JSON body ``{"error": code, "message": text}`` and the CLI into one line.
Driver and library errors are translated into this tree at the edge that
called them (``raise ... from exc``); core code never sees them.

Every exception class of the gateway is defined here and drawn below (a test
holds both to it). The errors of ``gateway.crypto`` are ``CryptoError``s and know
nothing of HTTP: where a signature is refused on behalf of a client, the boundary
answers with ``SignatureRejected.from_crypto`` (same status, code and message).

    GatewayError
    ├── ClientError                       (4xx: the caller can fix it)
    │   ├── BadPackage                    400 bad_package
    │   │   ├── MalformedXml              400 malformed_xml
    │   │   ├── ForbiddenXmlConstruct     400 forbidden_xml
    │   │   ├── SchemaInvalid             400 schema_invalid
    │   │   ├── InvalidAgencyCode         400 invalid_agency_code
    │   │   ├── ClassificationMismatch    400 classification_mismatch
    │   │   ├── DuplicateField            400 duplicate_field
    │   │   ├── InvalidDate               400 invalid_date
    │   │   ├── AttachmentMismatch        400 attachment_mismatch
    │   │   ├── InvalidAttachmentName     400 invalid_attachment_name
    │   │   └── PackageTooExpensive       400 too_expensive (over its CPU or memory budget)
    │   ├── BadRequest                    400 bad_request
    │   │   ├── DuplicateHeader           400 duplicate_header
    │   │   ├── InvalidEndpoint           400 invalid_endpoint (a notification endpoint that is not
    │   │   │                              an https URL the gateway can POST to)
    │   │   └── ClassificationBelowOriginal 400 classification_below_original (an update or
    │   │                                  replacement less protected than the document it changes)
    │   ├── ReceiptMismatch               400 receipt_mismatch
    │   ├── SignatureRejected             400 signature_invalid
    │   │   └── WeakAlgorithm             400 weak_algorithm
    │   ├── Unauthenticated               401 unauthenticated
    │   ├── Forbidden                     403 forbidden
    │   │   ├── SenderMismatch            403 sender_mismatch
    │   │   ├── SignerNotTrusted          403 signer_not_trusted
    │   │   └── ClearanceTooLow           403 clearance_too_low
    │   ├── NotFound                      404 not_found
    │   ├── RequestTimeout                408 request_timeout
    │   ├── DocumentConflict              409 document_conflict
    │   ├── AttachmentEncrypted           409 attachment_encrypted (a classified document's attachment:
    │   │                                  the gateway holds only ciphertext; fetch and decrypt it)
    │   ├── PackageTooLarge               413 too_large
    │   ├── TooManyRequests               429 rate_limited (with Retry-After)
    │   ├── TooManyConnections            429 too_many_connections (one client certificate holds its cap)
    │   ├── RecipientRejected             422 recipient_rejected
    │   │   ├── UnknownRecipient          422 unknown_recipient
    │   │   └── InactiveRecipient         422 inactive_recipient
    │   └── UnknownDocument               422 unknown_document (a recall, update or replacement names
    │                                      no document sent here)
    ├── ServerBusy                        503 server_busy (the gateway holds its cap of connections)
    ├── CheckersBusy                      503 checkers_busy (every package checker busy, queue full;
    │                                      with Retry-After)
    ├── UploadsBusy                       503 uploads_busy (the bytes of uploads in flight are at
    │                                      their budget; with Retry-After)
    ├── CheckerFailed                     (a checker process died or answered nonsense: 500)
    ├── ConsoleRefused                    (console: 401 or 403, answered as an HTML page)
    ├── ConfigError                       (operator: bad home, config or registry file)
    ├── UsageError                        (the command line is wrong: exit status 2)
    ├── CryptoError                       (a key, certificate, signature or ciphertext cannot be used)
    │   ├── CertificateRejected           (not trusted for this role at this time)
    │   ├── SignatureInvalid              (→ SignatureRejected at a client boundary)
    │   │   └── SignatureAlgorithmRefused (→ WeakAlgorithm)
    │   ├── DecryptionFailed              (says why, never what)
    │   │   ├── NotARecipient
    │   │   ├── AlgorithmRefused
    │   │   └── MalformedEncryptedData
    │   └── EncryptionFailed
    ├── AuditError                        (an audit export or head cannot be read or checked)
    ├── StoreError                        (the database failed)
    ├── DeliveryError                     (a hop refused a sealed transfer)
    ├── PeerUnavailable                   (the peer node is down or failed: retry later)
    ├── PushFailed                        (an agency's notification endpoint is down or refused: retry later)
    ├── RemoteError                       (agency side: the gateway answered with an error
    │                                      whose code the client does not know, or a 5xx)
    └── GatewayUnreachable                (agency side: refused, TLS failed, no answer in time)
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientError(GatewayError):
    """An error the caller caused and can fix; carries its HTTP status."""

    status: int = 400
    code: str = "bad_request"


class BadPackage(ClientError):
    status, code = 400, "bad_package"


class MalformedXml(BadPackage):
    code = "malformed_xml"


class ForbiddenXmlConstruct(BadPackage):
    """DTDs, entity declarations and processing instructions are never accepted, nor a document
    past one of the parser's limits (``XmlLimits``; the message names the limit)."""

    code = "forbidden_xml"


class SchemaInvalid(BadPackage):
    code = "schema_invalid"


class InvalidAgencyCode(BadPackage):
    code = "invalid_agency_code"


class ClassificationMismatch(BadPackage):
    """The secrecy level the sender signed differs from the one declared for routing."""

    code = "classification_mismatch"


class DuplicateField(BadPackage):
    """A field the gateway acts on (From, DocumentId, gw:Classification, Priority, DueDate...)
    appears more than once in a package: never a guess which one counts."""

    code = "duplicate_field"


class InvalidDate(BadPackage):
    """A date the gateway acts on (DueDate, a status Timestamp) is not a real date in a known form."""

    code = "invalid_date"


class AttachmentMismatch(BadPackage):
    """The manifest names an attachment the package lacks, or carries one the manifest does not name."""

    code = "attachment_mismatch"


class InvalidAttachmentName(BadPackage):
    """An attachment name that is not a plain file name (a path, ``..``, a control character, too long)."""

    code = "invalid_attachment_name"


class PackageTooExpensive(BadPackage):
    """Checking the package (parse, schema, signature, encryption) needed more CPU than
    ``submit_cpu_seconds`` or more memory than ``submit_memory_mb``; the checker was stopped and
    nothing was stored.

    A 400, not a 503: the budget counts the checker's own CPU time, not the time it waited for a
    core, so a busy node does not push an ordinary package over it, and the same package would
    only be refused again. Both bounds sit far above what real packages cost (README, Limits)."""

    code = "too_expensive"


class BadRequest(ClientError):
    status, code = 400, "bad_request"


class ClassificationBelowOriginal(BadRequest):
    """An update or replacement is classified lower than the original it changes: its content
    would lose the protection the original's content has."""

    code = "classification_below_original"


class DuplicateHeader(BadRequest):
    """A header the gateway acts on (``X-Classification``) came more than once: never a guess."""

    code = "duplicate_header"


class InvalidEndpoint(BadRequest):
    """A push-notification endpoint must be an absolute ``https://`` URL with a host and no
    credentials or fragment: the gateway POSTs to it over mutual TLS, never in clear."""

    code = "invalid_endpoint"


class ReceiptMismatch(ClientError):
    """A receipt's digest is not the digest of what was delivered to that recipient."""

    status, code = 400, "receipt_mismatch"


class SignatureRejected(ClientError):
    """The package's XML signature is missing, malformed or does not verify."""

    status, code = 400, "signature_invalid"

    @classmethod
    def from_crypto(cls, exc: SignatureInvalid) -> SignatureRejected:
        """The client error answering a signature the verifier refused: same message, and
        ``WeakAlgorithm`` when the refusal was an algorithm outside the policy."""
        if isinstance(exc, SignatureAlgorithmRefused):
            return WeakAlgorithm(exc.message)
        return SignatureRejected(exc.message)


class WeakAlgorithm(SignatureRejected):
    """SHA-1 and every other algorithm outside the policy is refused."""

    code = "weak_algorithm"


class Unauthenticated(ClientError):
    status, code = 401, "unauthenticated"


class Forbidden(ClientError):
    status, code = 403, "forbidden"


class SenderMismatch(Forbidden):
    code = "sender_mismatch"


class SignerNotTrusted(Forbidden):
    code = "signer_not_trusted"


class ClearanceTooLow(Forbidden):
    """A recipient (or the successor it is forwarded to) may not receive this secrecy level."""

    code = "clearance_too_low"


class NotFound(ClientError):
    status, code = 404, "not_found"


class RequestTimeout(ClientError):
    """The request body did not arrive within ``body_timeout`` seconds; the connection is closed."""

    status, code = 408, "request_timeout"


class DocumentConflict(ClientError):
    status, code = 409, "document_conflict"


class AttachmentEncrypted(ClientError):
    """One attachment of a classified document cannot be served: the gateway stores only the
    ciphertext for the recipients. The recipient fetches the document and decrypts it on its side
    (``gateway fetch --attachment`` does that)."""

    status, code = 409, "attachment_encrypted"


class PackageTooLarge(ClientError):
    status, code = 413, "too_large"


class TooManyRequests(ClientError):
    """The agency exceeded its submission limit; nothing was stored, retry after ``retry_after`` s."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyConnections(ClientError):
    """One client certificate already holds ``max_connections_per_client`` open connections."""

    status, code = 429, "too_many_connections"


class RecipientRejected(ClientError):
    status, code = 422, "recipient_rejected"


class UnknownRecipient(RecipientRejected):
    code = "unknown_recipient"


class InactiveRecipient(RecipientRejected):
    code = "inactive_recipient"


class UnknownDocument(ClientError):
    """A recall (or update, or replacement) names, by DocumentId, no document this gateway carried."""

    status, code = 422, "unknown_document"


class ServerBusy(GatewayError):
    """The gateway holds ``max_connections`` open connections; a new one is answered and closed.

    Not a ``ClientError``: no one client caused it (a client over its own cap gets
    ``TooManyConnections``)."""

    status, code = 503, "server_busy"


class CheckersBusy(GatewayError):
    """Every package checker is busy and the queue before them is full (or this agency holds its
    share of it): nothing was read further or stored; send again after ``retry_after`` seconds.

    Not a ``ClientError``: it is load, not anything wrong with the package; a 503 so that a
    document system retries it, and a bound so that waiting packages cannot fill the memory."""

    status, code = 503, "checkers_busy"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UploadsBusy(GatewayError):
    """The uploads being read hold ``max_upload_bytes_in_flight`` between them: this one was not
    read and nothing was stored; send again after ``retry_after`` seconds. Load, not the client's
    fault (a 503), and the bound that keeps concurrent 50 MB uploads from exhausting memory."""

    status, code = 503, "uploads_busy"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CheckerFailed(GatewayError):
    """A package checker process died for another reason than its CPU budget, or answered with
    something that is not a verdict: a fault of the gateway (answered 500, logged), never
    taken as a verdict on the package."""


class ConsoleRefused(GatewayError):
    """The console refuses the caller (401: no trusted certificate, 403: not an operator).

    Not a ``ClientError``: the console answers it as an HTML page, never as the API's JSON.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(GatewayError):
    """The operator's home directory, config file or registry file is unusable."""


class UsageError(GatewayError):
    """The command line is wrong (unknown option, missing argument); the CLI exits with 2."""


class CryptoError(GatewayError):
    """A key, certificate, signature or ciphertext cannot be loaded or used."""


class CertificateRejected(CryptoError):
    """A certificate is not trusted for the asked role at the asked time; the message says why."""


class SignatureInvalid(CryptoError):
    """An XML signature is missing, misplaced, malformed or does not verify."""


class SignatureAlgorithmRefused(SignatureInvalid):
    """A signature or digest algorithm outside the policy (SHA-1 and every other one)."""


class DecryptionFailed(CryptoError):
    """An EncryptedData cannot be decrypted with the given key; the message says why (never what)."""


class NotARecipient(DecryptionFailed):
    """The document holds no EncryptedKey for the given certificate."""


class AlgorithmRefused(DecryptionFailed):
    """An algorithm URI outside the policy (CBC, RSA PKCS#1 v1.5, SHA-1, or simply unknown)."""


class MalformedEncryptedData(DecryptionFailed):
    """The EncryptedData or one of its EncryptedKeys is not structured as this module writes them."""


class EncryptionFailed(CryptoError):
    """A recipient's certificate cannot be used to encrypt for it."""


class AuditError(GatewayError):
    """An audit export or head cannot be read or checked at all (as opposed to a finding)."""


class StoreError(GatewayError):
    """The database failed; the operation was rolled back."""


class DeliveryError(GatewayError):
    """A hop refused a sealed transfer (bad seal, wrong adapter)."""


class PeerUnavailable(GatewayError):
    """The peer node could not be reached or failed (5xx): try again later."""


class PushFailed(GatewayError):
    """An agency's notification endpoint could not be reached, or answered other than 2xx: the
    notification stays queued and is tried again after a back-off."""


class RemoteError(GatewayError):
    """The gateway answered with an error; carries its status and stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status = status
        self.code = code


class GatewayUnreachable(GatewayError):
    """Agency side: the gateway could not be reached (refused, TLS handshake failed, no answer in
    time). Sending again is safe: the same signed package is accepted once, under the same id."""
