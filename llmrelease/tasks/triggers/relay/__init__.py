"""The webhook relay: signed webhooks from GitHub and MLflow in, Prefect events out.

Prefect's open-source server has no incoming webhooks, so this small ASGI service verifies each
sender's HMAC signature and posts the event to ``POST /api/events``; deployment triggers in
``prefect.yaml`` take it from there.
"""
