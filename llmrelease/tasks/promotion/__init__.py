"""Promotion and what watches it: the candidate's registration (``candidate``), the release run's
record (``record``), compare-and-set promotion (``promote``), alias changes made by people
(``alias_change``), the status of an app's aliases (``status``), the nightly drift check of the
champion (``nightly``)."""
