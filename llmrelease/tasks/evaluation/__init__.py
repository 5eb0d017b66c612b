"""Evaluation: evalsets streamed in chunks, generation on an engine backend, scoring by scorer kind,
serving measurements. The step is ``step.evaluate``."""
