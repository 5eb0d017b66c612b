"""llmrelease."""
