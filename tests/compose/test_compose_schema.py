"""docker-compose.airflow.yml is a valid Compose file: against the Compose Specification JSON schema, and
through Docker Compose's own `config` (parser, interpolation, current schema), both without a Docker engine."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.compose import compose_support as cs


def _validator_class(schema: dict[str, Any]) -> type[jsonschema.protocols.Validator]:
    """The validator of the draft the schema declares. It declares it as ``http://...schema#``, a spelling
    jsonschema does not look up (it would fall back to the latest draft), so the URI is normalised first."""
    declared = schema["$schema"].rstrip("#").replace("http://", "https://", 1)
    validator_class = jsonschema.validators.validator_for({"$schema": declared}, default=None)
    assert validator_class is not None, f"unknown JSON Schema draft {schema['$schema']}"
    return validator_class


def _schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator_class = _validator_class(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def test_schema_is_the_declared_draft(compose_schema: dict[str, Any]) -> None:
    """The schema says which JSON Schema draft it is; validating with another draft could pass wrongly."""
    assert compose_schema["$schema"].startswith("http://json-schema.org/draft/2019-09/")
    assert _validator_class(compose_schema) is jsonschema.Draft201909Validator
    assert compose_schema["properties"]["services"]["additionalProperties"] is False


def test_compose_file_matches_compose_spec_schema(
    compose_schema: dict[str, Any], compose_interpolated: dict[str, Any]
) -> None:
    """Validated after interpolation, as Compose does (a port or duration is checked as it will be used)."""
    assert _schema_errors(compose_schema, compose_interpolated) == []


def test_compose_file_matches_schema_before_interpolation(
    compose_schema: dict[str, Any], compose_raw: dict[str, Any]
) -> None:
    assert _schema_errors(compose_schema, compose_raw) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "airflow-triggerer", "depend_on"), {}),  # a typo'd key
        (("services", "airflow-scheduler", "depends_on", "postgres", "condition"), "service_ready"),
        (("services", "postgres", "healthcheck", "retries"), "ten"),
        (("services", "airflow-api-server", "ports"), "8080:8080"),
    ],
)
def test_schema_rejects_a_broken_file(
    compose_schema: dict[str, Any], compose_interpolated: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    """The validation has teeth: the same file with one mistake is rejected."""
    broken = copy.deepcopy(compose_interpolated)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert _schema_errors(compose_schema, broken)


def test_docker_compose_config_accepts_the_file(compose_binary: Path, filled_env_file: Path) -> None:
    """Docker Compose itself parses, interpolates and validates the file with a .env from make-env.sh."""
    config = cs.compose_config(compose_binary, filled_env_file)
    env = cs.read_env_file(filled_env_file)
    scheduler_env = config["services"]["airflow-scheduler"]["environment"]
    assert json.loads(scheduler_env["AIRFLOW_CONN_DEXCARE_DEFAULT"]) == {
        "conn_type": "dexcare",
        "host": "http://dexcare-sandbox:8080",
        "password": env["DEXCARE_SANDBOX_TOKEN"],
    }


def test_docker_compose_refuses_to_start_without_secrets(compose_binary: Path, tmp_path: Path) -> None:
    """Without a filled .env, `docker compose up` stops before anything starts and says what to do."""
    empty = tmp_path / ".env"
    empty.write_text((cs.ROOT / ".env.example").read_text())
    with pytest.raises(
        cs.MissingVariableError, match=r"required variable \w+ is missing a value: .*docker/make-env\.sh"
    ):
        cs.compose_config(compose_binary, empty)


def test_compose_config_sees_only_the_environment_it_is_given(
    compose_binary: Path,
    filled_env_file: Path,
    filled_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither a .env beside the compose file (a developer's real one in the repo root) nor a variable exported
    in the shell reaches the tests' `docker compose config`: they see only the environment they pass."""
    compose_file = tmp_path / cs.COMPOSE_FILE.name
    shutil.copy2(cs.COMPOSE_FILE, compose_file)
    leaked = {"DEXCARE_HOST": "https://leaked.example.com", "DEXCARE_KEY": "leaked-key"}
    (tmp_path / ".env").write_text(
        filled_env_file.read_text() + "".join(f"{name}={value}\n" for name, value in leaked.items())
    )
    for name, value in {**filled_env, **leaked}.items():
        monkeypatch.setenv(name, value)
    config = cs.compose_config(compose_binary, env=filled_env, compose_file=compose_file)
    connection = json.loads(config["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_DEXCARE_DEFAULT"])
    assert (connection["host"], connection["password"]) == (
        "http://dexcare-sandbox:8080",
        filled_env["DEXCARE_SANDBOX_TOKEN"],
    )
    with pytest.raises(cs.MissingVariableError):
        cs.compose_config(compose_binary, compose_file=compose_file)
