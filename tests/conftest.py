"""Fixtures for every test; the code lives in gwtest.py (importable by a unique name)."""

from gwtest import *  # noqa: F403 - re-exports the fixtures (sink) and helpers
