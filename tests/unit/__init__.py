"""Unit tests of the use cases, built directly on the in-memory store and a manual clock."""
