"""Bijectors with log-det bookkeeping, base distributions and flows (see `bijector.py`)."""
