"""Test Connection as the UI does it: POST /api/v2/connections/test to a real api-server, with the body the
Connections page sends for a stored DexCare connection (port 0 for an empty port, the password masked)."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dexcare.compat import AIRFLOW_VERSION

from tests.support.airflow_cli import AIRFLOW, airflow_env, migrate
from tests.support.helpers import SANDBOX_TOKEN
from tests.support.processes import free_port, stop_group, wait_for

CONN_ID = "dexcare_ui_tested"


class ApiServer:
    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.env = airflow_env(
            home,
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__API_AUTH__JWT_ISSUER="dexcare-tests",  # Airflow 3.0 signs no token without one
        )
        (home / "passwords.json").write_text(json.dumps({"admin": "admin"}))
        self.url = f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def token(self) -> str:
        response = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": "admin"})
        response.raise_for_status()
        return response.json()["access_token"]

    def test(self, body: dict) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v2/connections/test", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {self.token()}"})


@pytest.fixture(scope="module")
def api_server(tmp_path_factory) -> Iterator[ApiServer]:
    home = tmp_path_factory.mktemp("airflow-home")
    server = ApiServer(home)
    migrate(server.env)
    log = (home / "api-server.log").open("w")
    process = subprocess.Popen([AIRFLOW, "api-server"], env=server.env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for("the api-server", lambda: _up(server.url), timeout=120)
        yield server
    finally:
        stop_group(process)
        log.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ui_body(stored: dict, **changes) -> dict:
    """What the Connections page posts for a stored connection: every field, the port as a number (0 when
    empty: ``Number(null)``), the password as the API shows it (masked)."""
    return {"connection_id": CONN_ID, "conn_type": "dexcare", "description": "", "extra": "{}", "login": "",
            "schema": "", "host": stored["host"], "port": 0, "password": "***", **changes}


@pytest.mark.slow  # a real api-server
def test_the_forms_test_connection_works_and_names_the_connection(api_server, sandbox):
    """Through POST /api/v2/connections/test, the route the UI's Test button calls; the route hands the hook a
    copy of the connection under a random id."""
    api_server.cli("connections", "add", CONN_ID, "--conn-type", "dexcare", "--conn-host", sandbox.url,
                   "--conn-password", SANDBOX_TOKEN)
    stored = {"host": sandbox.url}
    results = {}
    cases = {
        # the key typed in: port 0 is no port
        "typed key": ui_body(stored, password=SANDBOX_TOKEN),
        # the edit form with the stored key kept (masked) and the port left empty: Airflow puts the key back
        "stored key": {k: v for k, v in ui_body(stored).items() if k != "port"},
        "wrong key": {k: v for k, v in ui_body(stored, password="not-the-key").items() if k != "port"},
        # a connection Airflow has no key for (not saved yet; or any on Airflow 3.0, which never puts it back)
        "masked, nothing stored": ui_body(stored, connection_id="dexcare_not_saved"),
    }
    for case, body in cases.items():
        answer = api_server.test(body)
        assert answer.status_code == 200, f"{case}: {answer.text}"
        assert SANDBOX_TOKEN not in answer.text, case
        results[case] = answer.json()
    assert results["typed key"]["status"] is True, results
    # Airflow 3.1 and later put the stored key back for the masked one; 3.0 hands the hook the mask itself
    restores = not AIRFLOW_VERSION.startswith("3.0.")
    assert results["stored key"]["status"] is restores, results
    if not restores:
        assert "masked ('***')" in results["stored key"]["message"]
    wrong = results["wrong key"]
    assert wrong["status"] is False
    assert f"refused the reporting service key of the connection being tested (DexCare at {sandbox.url}" in \
        wrong["message"]
    assert "connection '" not in wrong["message"], "names the api-server's random stand-in id"
    masked = results["masked, nothing stored"]
    assert masked["status"] is False and "masked ('***')" in masked["message"] and "Enter the key" in masked["message"]
    # a masked key never reaches DexCare: only the tests with a key asked it
    assert len([r for r in sandbox.request_log if r[0] == "GET"]) == (3 if restores else 2)
    # Airflow 3.3.2's own route refuses the Connections list's Test button (port 0 against a stored empty port,
    # with the key masked) before the hook is asked: apache/airflow#73298, fixed after 3.3.2.
    listed = api_server.test(ui_body(stored))
    if listed.status_code == 400:
        assert "host or port to test differs from the stored connection" in listed.text
    else:  # Airflow 3.0 to 3.2 (and a fixed 3.3) ask the hook: port 0 is no port
        assert listed.status_code == 200 and listed.json()["status"] is restores, listed.text
