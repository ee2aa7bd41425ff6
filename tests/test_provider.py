"""The package as Airflow sees it: provider registration and the connection CLI, in a real AIRFLOW_HOME."""

from __future__ import annotations

import json
import subprocess

import pytest
from dexcare.get_provider_info import get_provider_info

from tests.support.airflow_cli import AIRFLOW, airflow_env, migrate
from tests.support.helpers import SANDBOX_TOKEN


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    env = airflow_env(
        tmp_path_factory.mktemp("airflow-home"),
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",  # Airflow 3.0 logs to stdout, into the JSON we read
    )
    migrate(env)
    return env


def airflow(env, *args: str) -> str:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_provider_info_is_declarative():
    info = get_provider_info()
    conn = info["connection-types"][0]
    assert conn["connection-type"] == "dexcare"
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "Reporting service key"
    assert conn["ui-field-behaviour"]["relabeling"]["host"] == "REST endpoint"
    assert set(conn["ui-field-behaviour"]["hidden-fields"]) == {"schema", "port", "login"}
    assert conn["ui-field-behaviour"]["placeholders"]["host"].startswith("https://")


@pytest.mark.parametrize("kind", ["operators", "sensors", "triggers"])
def test_provider_info_lists_every_module_of_its_kind(kind):
    """Airflow's provider registry (and the docs built from it) only know the modules listed here."""
    import importlib
    import pkgutil

    package = importlib.import_module(f"dexcare.{kind}")
    present = {f"dexcare.{kind}.{module.name}" for module in pkgutil.iter_modules(package.__path__)}
    listed = {module for entry in get_provider_info()[kind] for module in entry["python-modules"]}
    assert listed == present
    for module in listed:
        importlib.import_module(module)


@pytest.mark.slow  # a real airflow command in a migrated AIRFLOW_HOME
def test_airflow_lists_the_provider_and_its_connection_type(cli_env):
    providers = json.loads(airflow(cli_env, "providers", "list", "--output", "json"))
    assert any(p["package_name"] == "airflow-provider-dexcare" for p in providers)
    hooks = airflow(cli_env, "providers", "hooks", "--output", "json")
    assert "dexcare.hooks.dexcare.DexCareHook" in hooks


@pytest.mark.slow  # a real airflow command in a migrated AIRFLOW_HOME
def test_connections_add_and_test_against_the_sandbox(cli_env, sandbox):
    airflow(
        cli_env,
        "connections",
        "add",
        "dexcare_default",
        "--conn-type",
        "dexcare",
        "--conn-host",
        sandbox.url,
        "--conn-password",
        SANDBOX_TOKEN,
    )
    shown = airflow(cli_env, "connections", "get", "dexcare_default", "--output", "json")
    assert "dexcare" in shown
    tested = airflow(cli_env, "connections", "test", "dexcare_default")
    assert "success" in tested.lower(), tested
    assert SANDBOX_TOKEN not in tested
    assert not any(method == "POST" for method, _, _ in sandbox.request_log)


def test_report_storage_is_an_option_airflow_knows(cli_env):
    """Declared in the provider info, so Airflow lists it, has its (empty) default, and reads the environment."""
    assert "report_storage" in airflow(cli_env, "config", "list", "--section", "dexcare", "--include-descriptions")
    assert airflow(cli_env, "config", "get-value", "dexcare", "report_storage").strip() == ""
    env = {**cli_env, "AIRFLOW__DEXCARE__REPORT_STORAGE": "s3://aws_default@bucket/dexcare/"}
    assert airflow(env, "config", "get-value", "dexcare", "report_storage").strip() == "s3://aws_default@bucket/dexcare/"
