"""Voice profiles and voice-masking jobs (see issue 6)."""
