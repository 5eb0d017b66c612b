"""Prefect flows: compose tasks, no business logic."""
