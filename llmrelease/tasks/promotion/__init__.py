"""Promotion and what watches it: alias changes made by people (``alias_change``), the status
of an app's aliases (``status``), the nightly drift check of the champion (``nightly``)."""
