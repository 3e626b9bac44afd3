"""Reproducible speed measurements; results recorded in RESULTS.md."""
