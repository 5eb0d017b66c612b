"""Triggers: Git pushes (``push``) and the webhook relay that turns signed webhooks into Prefect
events (``relay``)."""
