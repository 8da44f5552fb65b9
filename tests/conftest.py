"""Fixtures for the export, serve and browser tests live in serve_fixtures.py; registered here."""

from serve_fixtures import digits_model, fer_model, fer_slice  # noqa: F401
