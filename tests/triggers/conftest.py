"""Fixtures for the DexCare triggers tests."""

from tests.triggers.helpers import slow_sandbox  # noqa: F401  (a fixture, shared by the task tests)
