"""Every Airflow 3 version loads the page's plugin, and its api-server mounts the page behind the auth manager.

The browser test (tests/e2e/test_dexcare_page.py) runs on the newest Airflow; this one runs on each version
in CI (Makefile COMPAT_TESTS): the entry point is found, Airflow's plugin manager loads the plugin, and the
api-server app Airflow builds answers ``/dexcare/`` with its auth manager's refusals.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from dexcare.compat import AIRFLOW_VERSION
from dexcare.ui.plugin import URL_PREFIX, DexCarePagePlugin

REPO = Path(__file__).resolve().parents[2]


def test_the_entry_point_airflow_reads_names_the_plugin() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["airflow.plugins"]
    assert declared == {"dexcare": "dexcare.ui.plugin:DexCarePagePlugin"}
    found = [ep for ep in importlib.metadata.entry_points(group="airflow.plugins") if ep.name == "dexcare"]
    assert found, "the installed package has no airflow.plugins entry point: reinstall it (make re-installs)"
    assert found[0].load() is DexCarePagePlugin


def test_airflow_loads_the_plugin_with_its_app_and_its_navigation_entry() -> None:
    from airflow import plugins_manager

    plugins_manager.ensure_plugins_loaded()
    loaded = {p.name: p for p in plugins_manager.plugins} if hasattr(plugins_manager, "plugins") and \
        plugins_manager.plugins is not None else {p.name: p for p in plugins_manager._get_plugins()[0]}
    assert "dexcare" in loaded
    (app,) = loaded["dexcare"].fastapi_apps
    assert app["url_prefix"] == URL_PREFIX
    (view,) = loaded["dexcare"].external_views
    assert view["destination"] == "nav" and view["href"] == "dexcare/"


@pytest.fixture(scope="module")
def api_server():
    """Airflow's own api-server app, in-process, on the test session's private SQLite metadata database (the
    token checks read it: revoked tokens on 3.2+)."""
    from airflow.api_fastapi.app import create_app
    from airflow.utils.db import initdb
    from fastapi.testclient import TestClient

    initdb()
    # Airflow 3.0 signs no token without an issuer, and its unit-test configuration has none.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__API_AUTH__JWT_ISSUER", "dexcare-tests")
        with TestClient(create_app()) as client:
            yield client


def test_the_api_server_mounts_the_page_and_refuses_anonymous_and_unauthorised_users(api_server) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    anonymous = api_server.get(f"{URL_PREFIX}/")
    assert anonymous.status_code == 401, (AIRFLOW_VERSION, anonymous.text)
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="outsider", role=None))
    for how in ({"headers": {"Authorization": f"Bearer {token}"}}, {"cookies": {"_token": token}}):
        refused = api_server.get(f"{URL_PREFIX}/", **how)
        assert refused.status_code == 403, (AIRFLOW_VERSION, refused.text)
