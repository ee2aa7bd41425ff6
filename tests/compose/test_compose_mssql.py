"""The `mssql` profile: Microsoft's SQL Server 2022 (Developer edition) as a warehouse the stack and
``make test-mssql`` can use, resolved by ``docker compose config`` (the image is never pulled here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.compose import compose_support as cs

MSSQL, MSSQL_INIT = "mssql", "mssql-init"


@pytest.fixture(scope="module")
def with_profile(compose_binary: Path, filled_env_file: Path) -> dict[str, Any]:
    """``docker compose --profile mssql config`` (COMPOSE_PROFILES is how the CLI flag reaches Compose)."""
    return cs.compose_config(compose_binary, filled_env_file, env={"COMPOSE_PROFILES": "mssql"})


def test_sql_server_only_with_the_profile(compose: dict[str, Any], with_profile: dict[str, Any]) -> None:
    assert MSSQL not in compose["services"] and MSSQL_INIT not in compose["services"]
    assert set(with_profile["services"]) == set(compose["services"]) | {MSSQL, MSSQL_INIT}


def test_sql_server_2022_developer_edition_with_the_eula_accepted(with_profile: dict[str, Any],
                                                                  filled_env: dict[str, str]) -> None:
    mssql = with_profile["services"][MSSQL]
    assert mssql["image"].startswith("mcr.microsoft.com/mssql/server:2022-")
    env = mssql["environment"]
    assert (env["ACCEPT_EULA"], env["MSSQL_PID"]) == ("Y", "Developer")
    assert env["MSSQL_SA_PASSWORD"] == filled_env["MSSQL_SA_PASSWORD"]
    assert [(p["host_ip"], p["target"]) for p in mssql["ports"]] == [("127.0.0.1", 1433)]
    assert any(v["target"] == "/var/opt/mssql" for v in mssql["volumes"])
    health = " ".join(mssql["healthcheck"]["test"])
    assert "sqlcmd" in health and "SQLCMDPASSWORD=" in health and "-P" not in health.split()


def test_the_warehouse_database_is_created_once_sql_server_is_healthy(with_profile: dict[str, Any]) -> None:
    init = with_profile["services"][MSSQL_INIT]
    assert init["depends_on"][MSSQL]["condition"] == "service_healthy"
    assert init.get("restart", "no") == "no"
    # `config` prints "$$" still escaped: the container's shell gets "$MSSQL_DB", from the service's environment.
    script = " ".join(init["command"]).replace("$$", "$")
    assert "IF DB_ID(N'$MSSQL_DB') IS NULL CREATE DATABASE [$MSSQL_DB]" in script
    assert "SQLCMDPASSWORD=" in script and " -P " not in script
    assert init["environment"]["MSSQL_DB"] == "warehouse"


def test_airflow_gets_a_warehouse_connection_to_it(compose: dict[str, Any], filled_env: dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Airflow service has ``dexcare_warehouse_mssql``; the loader reads it as an SQL Server warehouse."""
    from dexcare.load.connection import warehouse_type

    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        value = compose["services"][name]["environment"]["AIRFLOW_CONN_DEXCARE_WAREHOUSE_MSSQL"]
        conn = json.loads(value)
        assert {k: conn[k] for k in ("conn_type", "host", "port", "schema", "login")} == {
            "conn_type": "mssql", "host": MSSQL, "port": 1433, "schema": "warehouse", "login": "sa"}
        assert conn["password"] == filled_env["MSSQL_SA_PASSWORD"]
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE_MSSQL", value)
    assert warehouse_type("dexcare_warehouse_mssql") == "mssql"


def test_make_env_generates_a_password_sql_server_accepts(filled_env: dict[str, str]) -> None:
    """SQL Server refuses an sa password without three of: upper case, lower case, digits, symbols."""
    password = filled_env["MSSQL_SA_PASSWORD"]
    assert len(password) >= 8
    assert sum(bool(re.search(c, password)) for c in ("[A-Z]", "[a-z]", "[0-9]", "[^A-Za-z0-9]")) >= 3
