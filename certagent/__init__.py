"""certagent: ACME renewal that stages, rehearses, verifies and rolls back."""

__version__ = "0.1.0"
