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
    │   │   └── ClassificationMismatch    400 classification_mismatch
    │   ├── BadRequest                    400 bad_request
    │   ├── ReceiptMismatch               400 receipt_mismatch
    │   ├── SignatureRejected             400 signature_invalid
    │   │   └── WeakAlgorithm             400 weak_algorithm
    │   ├── Unauthenticated               401 unauthenticated
    │   ├── Forbidden                     403 forbidden
    │   │   ├── SenderMismatch            403 sender_mismatch
    │   │   ├── SignerNotTrusted          403 signer_not_trusted
    │   │   └── ClearanceTooLow           403 clearance_too_low
    │   ├── NotFound                      404 not_found
    │   ├── DocumentConflict              409 document_conflict
    │   ├── PackageTooLarge               413 too_large
    │   ├── TooManyRequests               429 rate_limited (with Retry-After)
    │   └── RecipientRejected             422 recipient_rejected
    │       ├── UnknownRecipient          422 unknown_recipient
    │       └── InactiveRecipient         422 inactive_recipient
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
    └── RemoteError                       (agency side: the gateway answered with an error)
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
    """DTDs, entity declarations and processing instructions are never accepted."""

    code = "forbidden_xml"


class SchemaInvalid(BadPackage):
    code = "schema_invalid"


class InvalidAgencyCode(BadPackage):
    code = "invalid_agency_code"


class ClassificationMismatch(BadPackage):
    """The secrecy level the sender signed differs from the one declared for routing."""

    code = "classification_mismatch"


class BadRequest(ClientError):
    status, code = 400, "bad_request"


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


class DocumentConflict(ClientError):
    status, code = 409, "document_conflict"


class PackageTooLarge(ClientError):
    status, code = 413, "too_large"


class TooManyRequests(ClientError):
    """The agency exceeded its submission limit; nothing was stored, retry after ``retry_after`` s."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecipientRejected(ClientError):
    status, code = 422, "recipient_rejected"


class UnknownRecipient(RecipientRejected):
    code = "unknown_recipient"


class InactiveRecipient(RecipientRejected):
    code = "inactive_recipient"


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


class RemoteError(GatewayError):
    """The gateway answered with an error; carries its status and stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status = status
        self.code = code
