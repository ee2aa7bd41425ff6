"""The wait's settings: one set of rules for the sensor (what DAG authors write) and the trigger (plain values)."""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid

import pytest
from dexcare.exceptions import DexCareValidationError
from dexcare.triggers.report_status import DexCareReportStatusTrigger
from dexcare.validation import MAX_SECONDS, count, given_count, given_seconds, seconds
from dexcare.wait.settings import WaitSettings

GOOD = {
    "poll_interval": 60,
    "timeout": 3600,
    "failed_grace_period": 600,
    "max_resubmits": 0,
    "max_consecutive_errors": 10,
    "dexcare_conn_id": "dexcare_default",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (2.5, 2.5),
        ("600", 600.0),
        (" 1.5 ", 1.5),
        (dt.timedelta(minutes=10), 600.0),
        (MAX_SECONDS, MAX_SECONDS),
    ],
)
def test_given_seconds_accepts_numbers_timedeltas_and_rendered_templates(value, expected):
    assert given_seconds("timeout", value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("inf", "timeout must be a finite number of seconds, got 'inf'"),
        (float("inf"), "finite number"),
        (float("nan"), "finite number"),
        ("nan", "finite number"),
        ("10m", "finite number of seconds, got '10m'"),
        (True, "finite number"),
        (None, "finite number"),
        (-1, "timeout must be >= 0 seconds"),
        (MAX_SECONDS + 1, "at most"),
        (dt.timedelta(days=365 * 11), "at most"),
    ],
)
def test_given_seconds_refuses_what_the_trigger_could_not_take(value, fragment):
    with pytest.raises(DexCareValidationError, match=fragment):
        given_seconds("timeout", value)


def test_positive_durations_refuse_zero():
    assert seconds("failed_grace_period", 0) == 0.0
    with pytest.raises(DexCareValidationError, match="poll_interval must be > 0 seconds"):
        seconds("poll_interval", 0, positive=True)


def test_plain_seconds_refuse_text_and_timedeltas():
    """The trigger's kwargs are stored as JSON: only the sensor turns text and timedeltas into numbers."""
    for value in ("600", dt.timedelta(seconds=600)):
        with pytest.raises(DexCareValidationError, match="finite number"):
            seconds("poll_interval", value)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (3, 3), ("2", 2), (" 4 ", 4)])
def test_given_count_accepts_integers_and_rendered_templates(value, expected):
    assert given_count("max_resubmits", value, least=0) == expected


@pytest.mark.parametrize("value", [-1, 2.5, True, "two", "2.0", "", None, "-1"])
def test_given_count_refuses_everything_else(value):
    with pytest.raises(DexCareValidationError, match="max_resubmits must be an integer >= 0"):
        given_count("max_resubmits", value, least=0)


def test_count_refuses_text():
    with pytest.raises(DexCareValidationError, match="max_consecutive_errors must be an integer >= 1"):
        count("max_consecutive_errors", "3", least=1)


def test_parse_names_the_bad_setting():
    assert WaitSettings.parse(**{**GOOD, "poll_interval": "30"}).poll_interval == 30.0
    for name, bad in [
        ("poll_interval", 0),
        ("timeout", "inf"),
        ("failed_grace_period", "10m"),
        ("max_resubmits", -1),
        ("max_consecutive_errors", 0),
        ("dexcare_conn_id", ""),
    ]:
        with pytest.raises(DexCareValidationError, match=name):
            WaitSettings.parse(**{**GOOD, name: bad})


CANDIDATES = {
    "poll_interval": [0, 0.01, 60, MAX_SECONDS, MAX_SECONDS * 2, "inf", "60", -5],
    "timeout": [0, 1, MAX_SECONDS, MAX_SECONDS + 1, float("inf"), "inf", "3600"],
    "failed_grace_period": [0, 600, -1, "nan", MAX_SECONDS],
    "max_consecutive_errors": [0, 1, 10, "3", 2.5],
}


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_whatever_the_sensor_accepts_the_trigger_accepts(name):
    """The sensor hands its settings to the trigger when it defers: a value that passes the sensor and then
    fails in the trigger would fail the task after the report was started."""
    accepted = 0
    for value in CANDIDATES[name]:
        try:
            settings = WaitSettings.parse(**{**GOOD, name: value})
        except DexCareValidationError:
            continue
        accepted += 1
        DexCareReportStatusTrigger(
            report_id=str(uuid.uuid4()),
            deadline=time.time() + settings.timeout,
            dexcare_conn_id=settings.dexcare_conn_id,
            poll_interval=settings.poll_interval,
            failed_grace_period=settings.failed_grace_period,
            max_consecutive_errors=settings.max_consecutive_errors,
        )
    assert accepted >= 2


def test_every_combination_of_extremes_builds_a_trigger():
    extremes = {
        "poll_interval": [0.001, MAX_SECONDS],
        "timeout": [0, MAX_SECONDS],
        "failed_grace_period": [0, MAX_SECONDS],
    }
    for values in itertools.product(*extremes.values()):
        settings = WaitSettings.parse(**{**GOOD, **dict(zip(extremes, values, strict=True))})
        trigger = DexCareReportStatusTrigger(
            str(uuid.uuid4()),
            time.time() + settings.timeout,
            poll_interval=settings.poll_interval,
            failed_grace_period=settings.failed_grace_period,
        )
        assert trigger.deadline >= time.time() - 1
