"""Routing: a cascade from a cheap route to a strong one, evaluated with the standard router metrics
(APGR, CPT, the random router at equal cost) and released like a candidate."""
