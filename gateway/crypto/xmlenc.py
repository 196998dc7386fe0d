"""XML Encryption 1.1 of whole elements, for documents only their addressed agencies may read.

The element (already signed: sign, then encrypt) is serialized once and encrypted
once with AES-256-GCM under a fresh content key; that key is then wrapped once per
recipient, each in its own ``xenc:EncryptedKey`` inside the ``xenc:EncryptedData``:

* RSA certificates: RSA-OAEP (``xenc11#rsa-oaep``) with SHA-256 and MGF1-SHA-256;
* EC P-256 certificates: ECDH-ES with a fresh ephemeral key per recipient, ConcatKDF
  (SHA-256) to a key-encryption key, and AES-256 key wrap (RFC 3394).

Each EncryptedKey names its recipient (``Recipient`` = agency code) and carries the
recipient's certificate, which is how a recipient finds its own EncryptedKey.

Decryption is all or nothing: the GCM tag covers the whole ciphertext, and no byte of
plaintext is parsed or returned unless it verifies. Only the algorithms above are
accepted; CBC modes and RSA PKCS#1 v1.5 are refused by name. Pure: no I/O.

A large EncryptedData (a 50 MB classified package is a 67 MB CipherValue) is decrypted from its
raw bytes in pieces (:func:`read_encrypted`, :func:`decrypt_streamed`): only its skeleton is
parsed, and the CipherValue text is decoded and decrypted piece by piece into one buffer, handed
out only once the tag verifies. Both ways share the shape checks and the key unwrapping.

One module although it is over 400 lines: encryption and decryption are the writer and
the reader of one wire format and share its identifiers and refusal list; apart, a change
to the writer would no longer be read next to the reader that must accept it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from lxml import etree

from gateway.crypto.pki import MIN_RSA_BITS, PrivateKey, fingerprint
from gateway.domain.edxml.spans import Base64Pieces
from gateway.domain.xmlsafe import parse_xml
from gateway.errors import (
    AlgorithmRefused,
    DecryptionFailed,
    EncryptionFailed,
    MalformedEncryptedData,
    NotARecipient,
)

# --- namespaces and algorithm identifiers -------------------------------------------------------

XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
DS = "http://www.w3.org/2000/09/xmldsig#"
DSIG11 = "http://www.w3.org/2009/xmldsig11#"
NSMAP = {"xenc": XENC, "xenc11": XENC11, "ds": DS, "dsig11": DSIG11}

TYPE_ELEMENT = XENC + "Element"
AES256_GCM = XENC11 + "aes256-gcm"
RSA_OAEP = XENC11 + "rsa-oaep"
SHA256 = XENC + "sha256"
MGF1_SHA256 = XENC11 + "mgf1sha256"
KW_AES256 = XENC + "kw-aes256"
ECDH_ES = XENC11 + "ECDH-ES"
CONCAT_KDF = XENC11 + "ConcatKDF"
P256_CURVE = "urn:oid:1.2.840.10045.3.1.7"

# Algorithms a sender might still use but we never accept, with the reason a person can act on.
REFUSED_ALGORITHMS: dict[str, str] = {
    XENC + "aes128-cbc": "AES-128-CBC (unauthenticated CBC, open to padding-oracle attacks)",
    XENC + "aes192-cbc": "AES-192-CBC (unauthenticated CBC, open to padding-oracle attacks)",
    XENC + "aes256-cbc": "AES-256-CBC (unauthenticated CBC, open to padding-oracle attacks)",
    XENC + "tripledes-cbc": "Triple-DES-CBC (unauthenticated CBC with a 64-bit block)",
    XENC + "rsa-1_5": "RSA PKCS#1 v1.5 key transport (open to Bleichenbacher attacks)",
    XENC + "rsa-oaep-mgf1p": "RSA-OAEP with MGF1-SHA-1 (use xmlenc11#rsa-oaep with SHA-256)",
    XENC + "kw-tripledes": "Triple-DES key wrap",
    "http://www.w3.org/2000/09/xmldsig#sha1": "SHA-1",
    XENC11 + "mgf1sha1": "MGF1 with SHA-1",
}

CONTENT_KEY_BYTES = 32
IV_BYTES = 12  # XML Enc 1.1 fixes a 96-bit IV for AES-GCM
TAG_BYTES = 16  # and a 128-bit tag

_NS = {"xenc": XENC, "xenc11": XENC11, "ds": DS, "dsig11": DSIG11}
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_CONCAT_KDF_FIELDS = ("AlgorithmID", "PartyUInfo", "PartyVInfo", "SuppPubInfo", "SuppPrivInfo")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
# Where an EncryptedKey names its recipient's certificate: key transport, then key agreement.
_CERT_PATHS = (
    "ds:KeyInfo/ds:X509Data/ds:X509Certificate",
    "ds:KeyInfo/xenc:AgreementMethod/xenc:RecipientKeyInfo/ds:X509Data/ds:X509Certificate",
)


@dataclass(frozen=True)
class EncryptionRecipient:
    """An addressed agency and its encryption certificate (RSA, or EC on P-256)."""

    code: str
    certificate: x509.Certificate


# --- encryption ---------------------------------------------------------------------------------


def encrypt_element(element: etree._Element, recipients: Sequence[EncryptionRecipient]) -> etree._Element:
    """Encrypt ``element`` (its UTF-8 serialization, tail excluded) for every one of ``recipients``.

    Returns a new ``xenc:EncryptedData`` (Type Element, AES-256-GCM) whose ``ds:KeyInfo`` holds
    one ``xenc:EncryptedKey`` per recipient, in the given order. The content is encrypted once
    under a fresh 256-bit key, whatever the number of recipients. ``element`` is not modified;
    the caller puts the result where the element was.

    Raises :class:`EncryptionFailed` when there is no recipient, a certificate appears twice,
    or a certificate's key is not RSA (>= 2048 bits) or EC P-256, or its key usage forbids
    key transport (RSA) / key agreement (EC).
    """
    if not recipients:
        raise EncryptionFailed("an encrypted document needs at least one recipient")
    seen: set[bytes] = set()
    for r in recipients:
        if not r.code:
            raise EncryptionFailed("every recipient needs a non-empty agency code")
        der = r.certificate.public_bytes(serialization.Encoding.DER)
        if der in seen:
            raise EncryptionFailed(
                f"certificate {_short(r.certificate)} is listed twice among the recipients"
            )
        seen.add(der)
        _check_recipient_key(r)

    # Serialized exactly once: these bytes are what a signature inside the element covers.
    plaintext = etree.tostring(element, encoding="UTF-8", xml_declaration=False, with_tail=False)
    content_key = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(IV_BYTES)
    sealed = iv + AESGCM(content_key).encrypt(iv, plaintext, None)  # ciphertext || tag

    data = etree.Element(_x("EncryptedData"), {"Type": TYPE_ELEMENT}, nsmap=NSMAP)
    etree.SubElement(data, _x("EncryptionMethod"), {"Algorithm": AES256_GCM})
    key_info = etree.SubElement(data, _d("KeyInfo"))
    for r in recipients:
        key_info.append(_encrypted_key(content_key, r))
    _cipher_data(data, sealed)
    return data


def _check_recipient_key(r: EncryptionRecipient) -> None:
    who = f"certificate {_short(r.certificate)} (recipient {r.code})"
    try:
        public = r.certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EncryptionFailed(f"{who}: its public key cannot be read") from exc
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise EncryptionFailed(
                f"{who}: RSA key of {public.key_size} bits; at least {MIN_RSA_BITS} needed"
            )
        usage, needed = "key_encipherment", "key encipherment"
    elif isinstance(public, ec.EllipticCurvePublicKey):
        if not isinstance(public.curve, ec.SECP256R1):
            raise EncryptionFailed(f"{who}: EC curve {public.curve.name}; only P-256 is supported")
        usage, needed = "key_agreement", "key agreement"
    else:
        raise EncryptionFailed(f"{who}: {type(public).__name__} keys cannot receive encrypted documents")
    try:
        ku = r.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    except (ValueError, x509.DuplicateExtension) as exc:  # cryptography parses extensions on first use
        raise EncryptionFailed(f"{who}: its extensions cannot be read") from exc
    if not getattr(ku, usage):
        # Catches a signing certificate passed by mistake before anything is encrypted to it.
        raise EncryptionFailed(
            f"{who}: its key usage does not permit {needed}; is it an encryption certificate?"
        )


def _encrypted_key(content_key: bytes, r: EncryptionRecipient) -> etree._Element:
    ek = etree.Element(_x("EncryptedKey"), {"Recipient": r.code})
    public = r.certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        method = etree.SubElement(ek, _x("EncryptionMethod"), {"Algorithm": RSA_OAEP})
        etree.SubElement(method, _d("DigestMethod"), {"Algorithm": SHA256})
        etree.SubElement(method, _x11("MGF"), {"Algorithm": MGF1_SHA256})
        key_info = etree.SubElement(ek, _d("KeyInfo"))
        _x509_data(key_info, r.certificate)
        wrapped = public.encrypt(content_key, _OAEP)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        etree.SubElement(ek, _x("EncryptionMethod"), {"Algorithm": KW_AES256})
        key_info = etree.SubElement(ek, _d("KeyInfo"))
        wrapped = _ecdh_wrap(content_key, public, r, key_info)
    else:  # _check_recipient_key refused it already
        raise EncryptionFailed(f"certificate {_short(r.certificate)}: unsupported key type")
    _cipher_data(ek, wrapped)
    return ek


def _ecdh_wrap(
    content_key: bytes, public: ec.EllipticCurvePublicKey, r: EncryptionRecipient, key_info: etree._Element
) -> bytes:
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    # FixedInfo binds the derived key to its use (the wrap algorithm) and to the addressed agency.
    fields = {
        "AlgorithmID": KW_AES256.encode(),
        "PartyUInfo": b"",
        "PartyVInfo": r.code.encode("utf-8"),
    }
    agreement = etree.SubElement(key_info, _x("AgreementMethod"), {"Algorithm": ECDH_ES})
    kdm = etree.SubElement(agreement, _x11("KeyDerivationMethod"), {"Algorithm": CONCAT_KDF})
    params = etree.SubElement(
        kdm, _x11("ConcatKDFParams"), {name: _bitstring(value) for name, value in fields.items()}
    )
    etree.SubElement(params, _d("DigestMethod"), {"Algorithm": SHA256})
    originator = etree.SubElement(agreement, _x("OriginatorKeyInfo"))
    ec_value = etree.SubElement(etree.SubElement(originator, _d("KeyValue")), _d11("ECKeyValue"))
    etree.SubElement(ec_value, _d11("NamedCurve"), {"URI": P256_CURVE})
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    etree.SubElement(ec_value, _d11("PublicKey")).text = _b64(point)
    _x509_data(etree.SubElement(agreement, _x("RecipientKeyInfo")), r.certificate)
    kek = _concat_kdf(ephemeral.exchange(ec.ECDH(), public), b"".join(fields.values()))
    return aes_key_wrap(kek, content_key)


def _concat_kdf(shared: bytes, fixed_info: bytes) -> bytes:
    # NIST SP 800-56A single-step KDF: SHA-256(counter || Z || FixedInfo), 32 bytes for kw-aes256.
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=32, otherinfo=fixed_info).derive(shared)


def _bitstring(value: bytes) -> str:
    # XML Enc 1.1 §5.4.1: hexBinary whose first byte counts the padding bits (0: byte-aligned).
    return "00" + value.hex().upper()


def _x509_data(parent: etree._Element, cert: x509.Certificate) -> None:
    x509_data = etree.SubElement(parent, _d("X509Data"))
    etree.SubElement(x509_data, _d("X509Certificate")).text = _b64(
        cert.public_bytes(serialization.Encoding.DER)
    )


def _cipher_data(parent: etree._Element, value: bytes) -> None:
    etree.SubElement(etree.SubElement(parent, _x("CipherData")), _x("CipherValue")).text = _b64(value)


# --- decryption ---------------------------------------------------------------------------------


def decrypt_element(
    encrypted: etree._Element, *, private_key: PrivateKey, certificate: x509.Certificate
) -> etree._Element:
    """Decrypt an ``xenc:EncryptedData`` made by :func:`encrypt_element` (or an equivalent peer).

    Finds the one EncryptedKey carrying ``certificate`` (compared as DER), unwraps the content
    key with ``private_key`` (which must belong to ``certificate``), decrypts and authenticates
    the content with AES-256-GCM, and parses the plaintext with :func:`gateway.domain.edxml.parse_xml`.
    Returns the decrypted element as the root of a new tree.

    Raises :class:`DecryptionFailed` (or a subclass) with a message naming the reason and never
    any plaintext; nothing is parsed unless the GCM tag verifies. Plaintext that authenticates
    but is not acceptable XML raises what ``parse_xml`` raises (``MalformedXml`` and kin).
    """
    sealed = _value_of(_shape_checked(encrypted), "the EncryptedData")
    _require_sealed_length(len(sealed))
    content_key = _content_key(encrypted, private_key, certificate)
    try:
        plaintext = AESGCM(content_key).decrypt(sealed[:IV_BYTES], sealed[IV_BYTES:], None)
    except InvalidTag as exc:
        raise DecryptionFailed(_TAG_FAILED) from exc
    return parse_xml(plaintext)


_TAG_FAILED = (
    "the ciphertext or its tag was altered (AES-256-GCM authentication failed; the "
    "EncryptedKey may also have been copied from another document); nothing was decrypted"
)


def _shape_checked(encrypted: etree._Element) -> etree._Element:
    """The EncryptedData's own CipherValue, once the element is of the one shape accepted."""
    if encrypted.tag != _x("EncryptedData"):
        raise MalformedEncryptedData(f"expected xenc:EncryptedData in namespace {XENC}")
    if encrypted.get("Type") != TYPE_ELEMENT:
        raise MalformedEncryptedData(f"only Type={TYPE_ELEMENT} is supported, not {encrypted.get('Type')!r}")
    _require_algorithm(encrypted.find("xenc:EncryptionMethod", _NS), AES256_GCM, "content encryption")
    return _cipher_value_node(encrypted, "the EncryptedData")


def _require_sealed_length(size: int) -> None:
    if size < IV_BYTES + TAG_BYTES:
        raise MalformedEncryptedData(
            f"the CipherValue is {size} bytes; AES-GCM needs at least {IV_BYTES + TAG_BYTES}"
        )


def _content_key(encrypted: etree._Element, private_key: PrivateKey, certificate: x509.Certificate) -> bytes:
    """The content key, unwrapped from the one EncryptedKey for ``certificate``."""
    _require_own_key(private_key, certificate)
    ek = _encrypted_key_for(encrypted, certificate)
    if isinstance(private_key, rsa.RSAPrivateKey):
        content_key = _unwrap_rsa(ek, private_key, certificate)
    else:
        content_key = _unwrap_ecdh(ek, private_key, certificate)
    if len(content_key) != CONTENT_KEY_BYTES:
        raise DecryptionFailed(
            f"the content key in the EncryptedKey for certificate {_short(certificate)} is "
            f"{len(content_key)} bytes; AES-256-GCM needs {CONTENT_KEY_BYTES}"
        )
    return content_key


# --- streaming decryption -----------------------------------------------------------------------

PieceReader = Callable[[int, int], Iterable[bytes]]
"""``(offset, length)`` → the EncryptedData's raw bytes in that range, in order, in pieces of any
size; called once for the whole, then once for the CipherValue text (a file is read twice, never
held)."""

# A CipherValue text longer than this is left out of the skeleton and streamed. Wrapped content
# keys are far shorter (684 characters for RSA-4096): only the content can be that long.
STREAM_FROM = 4096
_CIPHER_VALUE_TAG = re.compile(rb"<(?:[A-Za-z_][A-Za-z0-9_.\-]*:)?CipherValue[ \t\r\n]*>")
_TAG_ROOM = 128  # a start tag split between two pieces is searched again with the next piece


@dataclass(frozen=True)
class Skeleton:
    """An EncryptedData read from its raw bytes without its long CipherValue text: the element
    (that text replaced by ``placeholder``, random for each reading, so no document can forge it)
    and where the text lies in the raw bytes."""

    element: etree._Element
    read: PieceReader = field(repr=False)
    span: tuple[int, int] | None  # (offset, length) of the text left out; None: none was that long
    placeholder: str = field(repr=False)


def read_encrypted(read: PieceReader, size: int) -> Skeleton:
    """Parse the ``size`` raw bytes of an EncryptedData (from ``read``) with the hardened parser,
    all but a CipherValue text over ``STREAM_FROM`` bytes, which is only scanned (it must not hold
    ``&``: no entity or character reference is left out unseen). A second such text is refused.
    :func:`decrypt_streamed` then holds the element to what :func:`decrypt_element` accepts."""
    placeholder = f"gw-left-out-{secrets.token_hex(16)}"
    scan = _Scan(placeholder.encode("ascii"))
    for piece in read(0, size):
        scan.feed(bytes(piece))
    return Skeleton(parse_xml(bytes(scan.out)), read, scan.cut, placeholder)


def decrypt_streamed(
    skeleton: Skeleton, *, private_key: PrivateKey, certificate: x509.Certificate
) -> bytearray:
    """:func:`decrypt_element` of an EncryptedData read by :func:`read_encrypted`: the same
    checks, the same key unwrapping, the same refusals; the CipherValue is base64-decoded and
    decrypted piece by piece into one buffer, returned (not parsed: the caller parses it once)
    only after the GCM tag verified. On any failure the buffer is wiped and nothing is returned.

    The left-out text must be exactly the EncryptedData's own CipherData/CipherValue, whole: a
    comment, CDATA section or element inside it, or a long text anywhere else, is refused."""
    node = _shape_checked(skeleton.element)
    who = "the EncryptedData"
    sealed: Iterable[bytes]
    if skeleton.span is None:
        value = _value_of(node, who)
        _require_sealed_length(len(value))
        sealed = (value,)
    elif node.text == skeleton.placeholder and len(node) == 0:
        sealed = _decoded(skeleton.read(*skeleton.span), who)
    else:
        raise MalformedEncryptedData(
            f"{who} holds a long text that is not its CipherValue alone (a comment, CDATA or "
            "markup inside it, or a second CipherValue)"
        )
    plaintext = bytearray()
    _open_gcm(_content_key(skeleton.element, private_key, certificate), sealed, plaintext)
    return plaintext


class _Scan:
    """The raw bytes, fed in pieces, copied to ``out`` but for one long CipherValue text, left out
    (``cut``: its offset and length in the raw bytes) and replaced by the placeholder."""

    def __init__(self, placeholder: bytes) -> None:
        self.placeholder = placeholder
        self.out = bytearray()
        self.cut: tuple[int, int] | None = None
        self._searched = 0  # out[:_searched] holds no CipherValue start tag not yet acted on
        self._raw = 0  # how many raw bytes have been taken
        self._text_at: int | None = None  # inside a CipherValue text: where it began (raw offset)
        self._text = bytearray()  # that text while it is short
        self._left_out = False  # that text is the long one

    def feed(self, data: bytes) -> None:
        while data:
            if self._text_at is None:
                self.out += data
                self._raw += len(data)
                match = _CIPHER_VALUE_TAG.search(self.out, self._searched)
                if match is None:
                    self._searched = max(self._searched, len(self.out) - _TAG_ROOM)
                    return
                data = bytes(self.out[match.end() :])  # what follows the tag is its text
                del self.out[match.end() :]
                self._raw -= len(data)
                self._text_at, self._searched = self._raw, len(self.out)
                continue
            end = data.find(b"<")
            text = data if end < 0 else data[:end]
            self._raw += len(text)
            if not self._left_out:
                self._text += text
                if len(self._text) > STREAM_FROM:
                    self._leave_out()
            elif b"&" in text:
                raise MalformedEncryptedData(_REFERENCE_IN_TEXT)
            if end < 0:
                return
            if self._left_out:
                self.out += self.placeholder
                self.cut = (self._text_at, self._raw - self._text_at)
            else:
                self.out += self._text
            self._text.clear()
            self._text_at, self._left_out, self._searched = None, False, len(self.out)
            data = data[end:]

    def _leave_out(self) -> None:
        if self.cut is not None:
            raise MalformedEncryptedData(
                "the EncryptedData holds a second long CipherValue; only its own may be long"
            )
        if b"&" in self._text:
            raise MalformedEncryptedData(_REFERENCE_IN_TEXT)
        self._left_out = True
        self._text.clear()


_REFERENCE_IN_TEXT = "the CipherValue holds an entity or character reference; only base64 text is accepted"


def _decoded(text: Iterable[bytes], who: str) -> Iterable[bytes]:
    """The bytes of a base64 text given in pieces; anything but strict base64 (XML white space
    apart) is refused as the one-shot reading refuses it."""
    decoder = Base64Pieces()
    try:
        for piece in text:
            if out := decoder.feed(bytes(piece)):
                yield out
        decoder.finish()
    except (binascii.Error, ValueError):
        raise MalformedEncryptedData(f"the CipherValue of {who} is empty or not base64") from None


def _open_gcm(content_key: bytes, sealed: Iterable[bytes], plaintext: bytearray) -> None:
    """IV || ciphertext || tag, given in pieces, decrypted into ``plaintext``; the tag is the last
    16 bytes, so they are held back from the decryptor until the end. On any failure ``plaintext``
    is wiped (zeroed, then emptied) before the error goes on."""
    head = b""
    held = b""  # the last TAG_BYTES seen: the tag, once the pieces end
    decryptor = None
    size = 0
    try:
        for piece in sealed:
            size += len(piece)
            if decryptor is None:
                head += piece
                if len(head) < IV_BYTES:
                    continue
                decryptor = Cipher(algorithms.AES(content_key), modes.GCM(head[:IV_BYTES])).decryptor()
                piece, head = head[IV_BYTES:], b""
            data = held + piece
            plaintext += decryptor.update(data[:-TAG_BYTES])
            held = data[-TAG_BYTES:]
        _require_sealed_length(size)
        assert decryptor is not None  # 12 bytes or more came, by the length just checked
        try:
            plaintext += decryptor.finalize_with_tag(held)
        except InvalidTag as exc:
            raise DecryptionFailed(_TAG_FAILED) from exc
    except BaseException:
        _wipe(plaintext)
        raise


def _wipe(buffer: bytearray) -> None:
    # Unauthenticated plaintext must not outlive the refusal, even in memory freed but not reused.
    buffer[:] = bytes(len(buffer))
    buffer.clear()


def content_digest(encrypted: etree._Element) -> str:
    """Lowercase hex SHA-256 of the EncryptedData's CipherValue bytes (IV || ciphertext || tag).

    Identifies the encrypted content for routing and audit without decrypting it; it does not
    change when EncryptedKeys are added or removed.
    """
    return hashlib.sha256(_cipher_value(encrypted, "the EncryptedData")).hexdigest()


def _require_own_key(private_key: PrivateKey, certificate: x509.Certificate) -> None:
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    public = certificate.public_key()
    if private_key.public_key().public_bytes(*spki) != public.public_bytes(*spki):
        raise DecryptionFailed(f"the private key given does not belong to certificate {_short(certificate)}")
    if isinstance(public, ec.EllipticCurvePublicKey) and not isinstance(public.curve, ec.SECP256R1):
        raise DecryptionFailed(f"certificate {_short(certificate)}: only EC P-256 keys are supported")


def _encrypted_key_for(encrypted: etree._Element, certificate: x509.Certificate) -> etree._Element:
    wanted = certificate.public_bytes(serialization.Encoding.DER)
    found: list[etree._Element] = []
    for ek in encrypted.iterfind("ds:KeyInfo/xenc:EncryptedKey", _NS):
        for path in _CERT_PATHS:
            if any(_b64decode_or_none(node.text) == wanted for node in ek.iterfind(path, _NS)):
                found.append(ek)
                break
    if not found:
        raise NotARecipient(f"this document is not encrypted for certificate {_short(certificate)}")
    if len(found) > 1:
        raise MalformedEncryptedData(
            f"{len(found)} EncryptedKeys carry certificate {_short(certificate)}; exactly one may"
        )
    return found[0]


def _unwrap_rsa(ek: etree._Element, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bytes:
    who = f"the EncryptedKey for certificate {_short(cert)}"
    method = _require_algorithm(ek.find("xenc:EncryptionMethod", _NS), RSA_OAEP, "key transport")
    # Absent DigestMethod / MGF mean SHA-1 by the spec's defaults: refuse rather than assume.
    _require_algorithm(method.find("ds:DigestMethod", _NS), SHA256, "RSA-OAEP digest")
    _require_algorithm(method.find("xenc11:MGF", _NS), MGF1_SHA256, "RSA-OAEP mask generation")
    label = method.find("xenc:OAEPparams", _NS)
    if label is not None and (label.text or "").strip():
        raise MalformedEncryptedData(f"{who} uses an OAEP label (OAEPparams); none is supported")
    wrapped = _cipher_value(ek, who)
    try:
        return key.decrypt(wrapped, _OAEP)
    except ValueError as exc:
        raise DecryptionFailed(
            f"{who} does not unwrap with this private key (wrong key, or the wrapped key was altered)"
        ) from exc


def _unwrap_ecdh(ek: etree._Element, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bytes:
    who = f"the EncryptedKey for certificate {_short(cert)}"
    _require_algorithm(ek.find("xenc:EncryptionMethod", _NS), KW_AES256, "key wrap")
    agreement = ek.find("ds:KeyInfo/xenc:AgreementMethod", _NS)
    if agreement is None:
        raise MalformedEncryptedData(f"{who} has no xenc:AgreementMethod for its EC key")
    _require_algorithm(agreement, ECDH_ES, "key agreement")
    if agreement.find("xenc:KA-Nonce", _NS) is not None:
        raise MalformedEncryptedData(f"{who}: a KA-Nonce is not used with ECDH-ES")
    kdm = _require_algorithm(agreement.find("xenc11:KeyDerivationMethod", _NS), CONCAT_KDF, "key derivation")
    params = kdm.find("xenc11:ConcatKDFParams", _NS)
    if params is None:
        raise MalformedEncryptedData(f"{who} has no xenc11:ConcatKDFParams")
    _require_algorithm(params.find("ds:DigestMethod", _NS), SHA256, "ConcatKDF digest")
    fixed_info = b"".join(_read_bitstring(params.get(name), name, who) for name in _CONCAT_KDF_FIELDS)

    ec_value = agreement.find("xenc:OriginatorKeyInfo/ds:KeyValue/dsig11:ECKeyValue", _NS)
    if ec_value is None:
        raise MalformedEncryptedData(f"{who} has no originator dsig11:ECKeyValue")
    curve = ec_value.find("dsig11:NamedCurve", _NS)
    if curve is None or curve.get("URI") != P256_CURVE:
        raise MalformedEncryptedData(f"{who}: the originator key must be on P-256 ({P256_CURVE})")
    point = _b64decode_or_none(ec_value.findtext("dsig11:PublicKey", namespaces=_NS))
    try:
        if point is None:
            raise ValueError("no point")
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise MalformedEncryptedData(f"{who}: the originator public key is not a P-256 point") from exc

    wrapped = _cipher_value(ek, who)
    kek = _concat_kdf(key.exchange(ec.ECDH(), ephemeral), fixed_info)
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError) as exc:
        raise DecryptionFailed(
            f"{who} does not unwrap with this private key (wrong key, or the wrapped key, its "
            "ephemeral key or its ConcatKDF parameters were altered)"
        ) from exc


def _read_bitstring(value: str | None, name: str, who: str) -> bytes:
    if not value:
        return b""
    if not _HEX.fullmatch(value) or not value.startswith("00"):
        raise MalformedEncryptedData(
            f"{who}: ConcatKDFParams {name} must be hexBinary starting with 00 (byte-aligned)"
        )
    return bytes.fromhex(value[2:])


def _require_algorithm(node: etree._Element | None, expected: str, what: str) -> etree._Element:
    if node is None:
        raise MalformedEncryptedData(f"no {what} algorithm is given; {expected} is required")
    uri = node.get("Algorithm", "")
    if uri == expected:
        return node
    if uri in REFUSED_ALGORITHMS:
        raise AlgorithmRefused(
            f"{what} algorithm {uri} is refused: {REFUSED_ALGORITHMS[uri]}; use {expected}"
        )
    raise AlgorithmRefused(f"{what} algorithm {uri or '(none)'} is not supported; use {expected}")


def _cipher_value_node(parent: etree._Element, who: str) -> etree._Element:
    if parent.find("xenc:CipherData/xenc:CipherReference", _NS) is not None:
        # A reference would make us fetch bytes from elsewhere; everything must be inline.
        raise MalformedEncryptedData(f"{who} uses a CipherReference; only an inline CipherValue is accepted")
    values = parent.findall("xenc:CipherData/xenc:CipherValue", _NS)
    if len(values) != 1:
        raise MalformedEncryptedData(f"{who} must have exactly one xenc:CipherData/xenc:CipherValue")
    return values[0]


def _cipher_value(parent: etree._Element, who: str) -> bytes:
    return _value_of(_cipher_value_node(parent, who), who)


def _value_of(node: etree._Element, who: str) -> bytes:
    value = _b64decode_or_none(node.text)
    if not value:
        raise MalformedEncryptedData(f"the CipherValue of {who} is empty or not base64")
    return value


# --- helpers ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode_or_none(text: str | None) -> bytes | None:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _short(cert: x509.Certificate) -> str:
    return f"{fingerprint(cert)[:16]}…"


def _x(tag: str) -> str:
    return f"{{{XENC}}}{tag}"


def _x11(tag: str) -> str:
    return f"{{{XENC11}}}{tag}"


def _d(tag: str) -> str:
    return f"{{{DS}}}{tag}"


def _d11(tag: str) -> str:
    return f"{{{DSIG11}}}{tag}"
