"""The composition root (``node``), carrier processes, logging, configuration, the supervisor loop."""
