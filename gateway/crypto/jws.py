"""Detached JSON Web Signatures over bytes sent beside them: how push notifications are signed.

The form is JWS compact serialisation (RFC 7515) with a detached, unencoded payload (RFC 7515
appendix F and RFC 7797, ``"b64": false``): the token is ``HEADER..SIGNATURE`` and the signing
input is ``HEADER`` ``.`` followed by the body bytes exactly as they travelled. A receiver never
re-encodes the body, and any JOSE library that knows RFC 7797 (PyJWT's ``detached_payload``, for
one) checks it with the certificate in ``x5c``. Only ES256 (P-256) and PS256 (RSA-PSS, SHA-256)
are made or accepted; ``none``, HMAC and RSA PKCS#1 v1.5 are refused by name.

Bytes in, bytes out, no I/O: who may sign is decided by the caller's ``check_certificate``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.crypto.pki import PrivateKey
from gateway.errors import SignatureAlgorithmRefused, SignatureInvalid

ALGORITHMS = ("ES256", "PS256")
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)  # RFC 7518 3.5: salt = hash size
_MAX_TOKEN = 16 * 1024  # a header with a certificate chain is about 3 KB; more is not ours
_T = TypeVar("_T")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not text or any(
        c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text
    ):
        raise SignatureInvalid("the signature token is not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_detached(payload: bytes, key: PrivateKey, chain: Sequence[x509.Certificate]) -> str:
    """``HEADER..SIGNATURE`` over ``payload``; the header names the algorithm and carries ``chain``
    (leaf first) in ``x5c`` so that the receiver needs only its trust anchors."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SignatureAlgorithmRefused(f"ES256 needs a P-256 key, not {key.curve.name}")
        alg = "ES256"
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = "PS256"
    else:  # pragma: no cover - PrivateKey is one of the two
        raise SignatureAlgorithmRefused(f"no JWS algorithm for a {type(key).__name__}")
    header = {
        "alg": alg,
        "b64": False,
        "crit": ["b64"],
        "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii") for c in chain],
    }
    protected = _b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    message = protected.encode("ascii") + b"." + payload
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants R || S, not DER
    else:
        signature = key.sign(message, _PSS, hashes.SHA256())
    return f"{protected}..{_b64url(signature)}"


def verify_detached(token: str, payload: bytes, check_certificate: Callable[[x509.Certificate], _T]) -> _T:
    """Check ``token`` over ``payload``; returns what ``check_certificate`` says of the signing
    certificate (it raises to refuse one). Raises ``SignatureInvalid`` for anything else."""
    if len(token) > _MAX_TOKEN:
        raise SignatureInvalid("the signature token is too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise SignatureInvalid("expected a detached JWS: HEADER..SIGNATURE")
    protected, _, encoded_signature = parts
    try:
        header: Any = json.loads(_unb64url(protected))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureInvalid("the JWS header is not JSON") from exc
    if not isinstance(header, dict):
        raise SignatureInvalid("the JWS header is not a JSON object")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise SignatureAlgorithmRefused(
            f"JWS algorithm {alg!r} is refused; only ES256 and PS256 are accepted"
        )
    if header.get("b64") is not False or header.get("crit") != ["b64"]:
        raise SignatureInvalid('the JWS header must say "b64": false, "crit": ["b64"] (RFC 7797)')
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
        raise SignatureInvalid("the JWS header carries no x5c certificate")
    try:
        leaf = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (ValueError, binascii.Error) as exc:
        raise SignatureInvalid("the x5c certificate cannot be read") from exc
    verdict = check_certificate(leaf)
    signature = _unb64url(encoded_signature)
    message = protected.encode("ascii") + b"." + payload
    public = leaf.public_key()
    try:
        if alg == "ES256" and isinstance(public, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                raise SignatureInvalid("an ES256 signature is 64 bytes")
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            public.verify(der, message, ec.ECDSA(hashes.SHA256()))
        elif alg == "PS256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, _PSS, hashes.SHA256())
        else:
            raise SignatureInvalid(f"JWS algorithm {alg} does not fit the certificate's key")
    except InvalidSignature as exc:
        raise SignatureInvalid("the signature does not verify over this body") from exc
    return verdict
