"""The tamper-evident delivery log: record hashes, signed heads, verification and export."""
