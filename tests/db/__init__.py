"""Tests of `db/`."""
