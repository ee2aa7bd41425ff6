"""Fixtures for the DexCare sensors tests."""

from tests.triggers.helpers import slow_sandbox  # noqa: F401  (a fixture, shared by the task tests)
