"""Registered models and their inference services (issue 5)."""
