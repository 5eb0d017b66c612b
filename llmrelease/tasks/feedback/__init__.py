"""From production back to the release: feedback on logged requests, attributed to the exact model
and prompt version that answered, becomes a regression evalset, an SFT set and a preference set."""
