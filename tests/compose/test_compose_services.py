"""The stack the daily DAG needs: every component, wired in the right order, on the right config, with the
DAGs and the package mounted and the connections pointing at the sandbox service unless told otherwise."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.compose import compose_support as cs

POSTGRES = "postgres"
INIT = "airflow-init"
API_SERVER = "airflow-api-server"
SCHEDULER = "airflow-scheduler"
DAG_PROCESSOR = "airflow-dag-processor"
TRIGGERER = "airflow-triggerer"
SANDBOX = "dexcare-sandbox"
# Components that run Airflow processes and so need its config, the DAGs and the package.
AIRFLOW_SERVICES = (INIT, API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
LONG_RUNNING_AIRFLOW = (API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER)
IMAGE_SERVICES = (*AIRFLOW_SERVICES, SANDBOX)


def _command(service: dict[str, Any]) -> list[str]:
    """Compose normalises ``command`` to a list (null when the image's default is used)."""
    return list(service.get("command") or [])


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Compose normalises ``depends_on`` to the long form: {service: {condition, required, ...}}."""
    return {name: spec["condition"] for name, spec in (service.get("depends_on") or {}).items()}


def _build(service: dict[str, Any]) -> dict[str, Any]:
    """The build section with its context relative to the repo again (Compose makes paths absolute)."""
    build = dict(service["build"])
    build["context"] = os.path.relpath(build["context"], cs.ROOT)
    return build


def _host_path(path: str) -> str:
    relative = os.path.relpath(path, cs.ROOT)
    return relative if relative.startswith("..") else f"./{relative}"


def _volumes(service: dict[str, Any]) -> list[str]:
    """Compose's long-form volumes in the short form the file is written in: SOURCE:TARGET[:ro]."""
    short = []
    for volume in service.get("volumes") or []:
        source = _host_path(volume["source"]) if volume["type"] == "bind" else volume["source"]
        short.append(f"{source}:{volume['target']}" + (":ro" if volume.get("read_only") else ""))
    return short


def _ports(service: dict[str, Any]) -> list[str]:
    """Compose's long-form ports in the short form: [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]."""
    short = []
    for port in service.get("ports") or []:
        parts = [str(port[key]) for key in ("host_ip", "published") if port.get(key)]
        protocol = "" if port.get("protocol", "tcp") == "tcp" else f"/{port['protocol']}"
        short.append(":".join([*parts, str(port["target"])]) + protocol)
    return short


def test_every_service_the_dag_needs_is_defined(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {POSTGRES, INIT, API_SERVER, SCHEDULER, DAG_PROCESSOR, TRIGGERER, SANDBOX}
    assert services[POSTGRES]["image"].startswith("postgres:")
    assert _command(services[INIT]) == ["dexcare-airflow-init"]
    assert _command(services[API_SERVER])[:2] == ["airflow", "api-server"]
    assert _command(services[SCHEDULER]) == ["airflow", "scheduler"]
    assert _command(services[DAG_PROCESSOR]) == ["airflow", "dag-processor"]
    assert _command(services[SANDBOX])[:3] == ["python", "-m", "dexcare.sandbox"]


def test_triggerer_runs_airflow_triggerer(compose: dict[str, Any]) -> None:
    """Without a triggerer, the deferred sensors never resume: the run hangs until its timeout."""
    triggerer = compose["services"][TRIGGERER]
    assert _command(triggerer) == ["airflow", "triggerer"]
    assert triggerer["image"] == compose["services"][SCHEDULER]["image"]
    assert triggerer["restart"] == "unless-stopped"
    assert "TriggererJob" in " ".join(triggerer["healthcheck"]["test"])
    assert _depends_on(triggerer)[SANDBOX] == "service_healthy"


def test_one_image_holds_airflow_and_the_package(compose: dict[str, Any]) -> None:
    """Built once: `up --build` with a build section on every service ran six identical builds at once (six
    pip installs on an empty cache). Only airflow-init builds it; the others run that image and never pull a
    registry image that happens to carry the same name."""
    images = {compose["services"][name]["image"] for name in IMAGE_SERVICES}
    assert len(images) == 1
    builders = [name for name, service in compose["services"].items() if "build" in service]
    assert builders == [INIT]
    assert json.dumps(_build(compose["services"][INIT]), sort_keys=True) == json.dumps(
        {"context": ".", "dockerfile": "docker/Dockerfile.airflow"}, sort_keys=True
    )
    for name in IMAGE_SERVICES:
        assert compose["services"][name]["pull_policy"] == "never", name


def test_start_order_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in services, f"{name} depends on undefined {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s missing healthcheck"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart", "no") == "no", f"{dependency} is a one-shot step"
    assert _depends_on(services[INIT]) == {POSTGRES: "service_healthy"}
    for name in LONG_RUNNING_AIRFLOW:
        deps = _depends_on(services[name])
        assert deps[POSTGRES] == "service_healthy", name
        assert deps[INIT] == "service_completed_successfully", name
        assert "healthcheck" in services[name], name
        assert services[name]["restart"] == "unless-stopped", name
    # Tasks run in the scheduler container (LocalExecutor) and report to the Execution API.
    assert _depends_on(services[SCHEDULER])[API_SERVER] == "service_healthy"
    assert _depends_on(services[SCHEDULER])[SANDBOX] == "service_healthy"
    # No cycle: a topological order exists.
    remaining = {name: set(_depends_on(service)) for name, service in services.items()}
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps & set(remaining)]
        assert ready, f"dependency cycle among {sorted(remaining)}"
        for name in ready:
            del remaining[name]


def test_healthchecks_are_runnable(compose: dict[str, Any]) -> None:
    """The Python one-liners compile and the health ports are the ones the processes listen on."""
    services = compose["services"]
    for name, service in services.items():
        test = service["healthcheck"]["test"] if "healthcheck" in service else None
        if test and test[0] == "CMD" and test[1:3] == ["python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")
    assert "'/api/v2/monitor/health'" in services[API_SERVER]["healthcheck"]["test"][3]
    assert "127.0.0.1:8974/health" in services[SCHEDULER]["healthcheck"]["test"][3]
    assert services[SCHEDULER]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    assert "('127.0.0.1', 8080)" in services[SANDBOX]["healthcheck"]["test"][3]
    assert "DagProcessorJob --local" in services[DAG_PROCESSOR]["healthcheck"]["test"][1]
    # Over TCP: the image's first-time init server listens on the socket only.
    assert "-h 127.0.0.1" in services[POSTGRES]["healthcheck"]["test"][1]


def test_airflow_components_share_one_configuration(compose: dict[str, Any]) -> None:
    """Fernet key, JWT secret, database and executor must agree across components, or tasks fail to
    authenticate to the Execution API and stored secrets cannot be decrypted."""
    environments = [compose["services"][name]["environment"] for name in AIRFLOW_SERVICES]
    shared = {key for key in environments[0] if key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "DEXCARE_DAG_"))}
    for env in environments[1:]:
        assert {key: env[key] for key in shared} == {key: environments[0][key] for key in shared}
    env = environments[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://{API_SERVER}:8080/execution/"
    database_url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert re.fullmatch(rf"postgresql\+psycopg2://airflow:[^@]+@{POSTGRES}:5432/airflow", database_url)
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert env[key], key
    api_ports = _ports(compose["services"][API_SERVER])
    assert api_ports == ["127.0.0.1:8080:8080"]


def test_airflow_settings_are_options_of_the_installed_airflow(compose_raw: dict[str, Any]) -> None:
    """Each AIRFLOW__SECTION__KEY names a real option of the Airflow the image runs (the one installed
    here, pinned alike): a misspelt name would be ignored silently."""
    from airflow.configuration import conf

    description = conf.configuration_description
    names = {key for name in AIRFLOW_SERVICES for key in compose_raw["services"][name]["environment"]}
    settings = sorted(name for name in names if name.startswith("AIRFLOW__"))
    assert len(settings) >= 10
    for name in settings:
        _, section, option = name.split("__", 2)
        assert option.lower() in description.get(section.lower(), {}).get("options", {}), name


def test_dags_and_package_source_are_mounted(compose: dict[str, Any]) -> None:
    """dags/ where Airflow looks for DAGs; plugins/ where the image installed the package editable, so code
    changes reach every component without a rebuild."""
    for name in AIRFLOW_SERVICES:
        volumes = _volumes(compose["services"][name])
        assert "./dags:/opt/airflow/dags:ro" in volumes, name
        assert "./plugins:/opt/dexcare/plugins:ro" in volumes, name
        assert "airflow-logs:/opt/airflow/logs" in volumes, name
    assert "./plugins:/opt/dexcare/plugins:ro" in _volumes(compose["services"][SANDBOX])
    # The password file the init step writes is the one the api-server reads.
    for name in (INIT, API_SERVER):
        assert "airflow-auth:/opt/airflow/auth" in _volumes(compose["services"][name]), name
        assert compose["services"][name]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == (
            "/opt/airflow/auth/passwords.json"
        )
    assert (cs.ROOT / "dags" / "dexcare_all_visits_report.py").is_file()
    assert (cs.ROOT / "plugins" / "dexcare" / "__init__.py").is_file()
    assert set(compose["volumes"]) == {"postgres-data", "airflow-logs", "airflow-auth"}


def test_connections_point_at_the_sandbox_by_default(compose: dict[str, Any], filled_env: dict[str, str]) -> None:
    from airflow.models.connection import Connection

    services = compose["services"]
    sandbox_command = _command(services[SANDBOX])
    assert sandbox_command[sandbox_command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside its container
    assert sandbox_command[sandbox_command.index("--port") + 1] == "8080"
    token = services[SANDBOX]["environment"]["DEXCARE_SANDBOX_TOKEN"]
    assert token == filled_env["DEXCARE_SANDBOX_TOKEN"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        dexcare = Connection.from_json(env["AIRFLOW_CONN_DEXCARE_DEFAULT"], conn_id="dexcare_default")
        assert (dexcare.conn_type, dexcare.host, dexcare.password) == ("dexcare", f"http://{SANDBOX}:8080", token)
        warehouse = Connection.from_json(env["AIRFLOW_CONN_DEXCARE_WAREHOUSE"], conn_id="dexcare_warehouse")
        postgres_env = services[POSTGRES]["environment"]
        assert (warehouse.conn_type, warehouse.host, warehouse.port) == ("postgres", POSTGRES, 5432)
        assert (warehouse.schema, warehouse.login, warehouse.password) == (
            postgres_env["WAREHOUSE_DB"],
            postgres_env["WAREHOUSE_USER"],
            postgres_env["WAREHOUSE_PASSWORD"],
        )
        assert warehouse.schema != "airflow", "the warehouse is not Airflow's metadata database"


def test_real_dexcare_from_env(compose_binary: Path, filled_env: dict[str, str]) -> None:
    """DEXCARE_HOST and DEXCARE_KEY in .env switch dexcare_default to real DexCare, nothing else to edit."""
    from airflow.models.connection import Connection

    env = {**filled_env, "DEXCARE_HOST": "https://ecvapi.care.example.com", "DEXCARE_KEY": "real-key-5b1e"}
    resolved = cs.compose_config(compose_binary, env=env)
    for name in AIRFLOW_SERVICES:
        value = resolved["services"][name]["environment"]["AIRFLOW_CONN_DEXCARE_DEFAULT"]
        conn = Connection.from_json(value, conn_id="dexcare_default")
        assert (conn.host, conn.password) == ("https://ecvapi.care.example.com", "real-key-5b1e")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [("DEXCARE_DAG_RETRIES", "5", "5"), ("DEXCARE_FAILURE_NOTIFIER", "x.Notifier", "x.Notifier")],
)
def test_dag_knobs_come_from_env(
    compose_binary: Path, filled_env: dict[str, str], variable: str, value: str, expected: str
) -> None:
    resolved = cs.compose_config(compose_binary, env={**filled_env, variable: value})
    for name in (SCHEDULER, DAG_PROCESSOR, TRIGGERER):
        assert resolved["services"][name]["environment"][variable] == expected


def _seconds(duration: str) -> float:
    """A Compose duration (``1m30s``, ``40s``, ``500ms``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_api_server_is_healthy_only_once_the_execution_api_answers(compose: dict[str, Any]) -> None:
    """The REST API answered 8-25 s before the Execution API, which is set up on its first request: the first
    task paid for it (its state call retried, `plan` 25 s instead of 1.6 s). The healthcheck requests both,
    on paths the installed Airflow serves, and waits long enough for the set-up."""
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.execution_api.routes import health

    check = compose["services"][API_SERVER]["healthcheck"]
    code = check["test"][3]
    env = compose["services"][SCHEDULER]["environment"]
    execution_prefix = "/" + env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].split("/", 3)[3].strip("/")
    assert execution_prefix == "/execution" and execution_prefix in RESERVED_URL_PREFIXES
    assert "/health/ping" in {route.path for route in health.router.routes}
    assert f"'{execution_prefix}/health/ping'" in code
    assert "'http://127.0.0.1:8080' + p" in code
    urlopen_timeout = float(re.search(r"timeout=(\d+)", code)[1])
    assert urlopen_timeout >= 25, "the Execution API's set-up took up to 25 s"
    assert _seconds(check["timeout"]) > urlopen_timeout
    # What runs tasks waits for that healthcheck (LocalExecutor: the scheduler; a Celery worker would too).
    assert compose["services"][SCHEDULER]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert _depends_on(compose["services"][SCHEDULER])[API_SERVER] == "service_healthy"


def test_long_running_airflow_services_get_time_to_stop(compose: dict[str, Any]) -> None:
    """Compose kills a container 10 s after SIGTERM by default (exit 137). With the whole stack stopping
    (`make compose-smoke`, 2 vCPUs) the triggerer took 4-16 s, the api-server 3-11 s and the scheduler 1-8 s:
    they get 30 s."""
    for name in (TRIGGERER, SCHEDULER, API_SERVER):
        assert _seconds(compose["services"][name]["stop_grace_period"]) >= 30, name


def test_sensor_resumes_are_not_raced(compose: dict[str, Any]) -> None:
    """A worker's exit is noticed within [workers] min_heartbeat_interval; Airflow 3.3.2 fails a sensor whose
    trigger fires before that (then it waits out a retry delay), which a short poll_interval otherwise hits."""
    for name in AIRFLOW_SERVICES:
        assert compose["services"][name]["environment"]["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] == "1", name
