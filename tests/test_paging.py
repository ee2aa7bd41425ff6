"""The deadline callback path that runs created before the move to dexcare.daily still hold."""

from __future__ import annotations

import importlib


def test_a_run_created_before_the_move_still_finds_its_deadline_callback():
    stored = "dexcare.paging.page_missed_deadline"  # what Airflow wrote into the deadline rows of older runs
    module, _, name = stored.rpartition(".")
    callback = getattr(importlib.import_module(module), name)
    assert callback is importlib.import_module("dexcare.daily.paging").page_missed_deadline
