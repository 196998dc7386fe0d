"""``gateway`` and its commands, one module per group; heavy imports stay inside the commands so
``gateway --help`` is fast."""

from gateway.cli.entry import main

__all__ = ["main"]
