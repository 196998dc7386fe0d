"""Signing, verification, encryption and PKI: bytes and objects in, results out; no I/O."""
