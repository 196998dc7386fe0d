"""Contract tests: one suite that every implementation of a port must pass."""
