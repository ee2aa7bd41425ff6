"""Fixtures for the DexCare operators tests."""

from tests.triggers.helpers import slow_sandbox  # noqa: F401  (a fixture, shared by the task tests)
