"""Fixtures for the SMS tests; the code lives in smstest.py (importable by a unique name)."""

from smstest import *  # noqa: F403 - re-exports the fixtures and helpers
