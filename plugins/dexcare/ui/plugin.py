"""The Airflow plugin that puts the DexCare page into the api-server (and, on 3.1+, into the UI's navigation).

Registered through the ``airflow.plugins`` entry point (pyproject.toml), which every Airflow 3 component reads
whatever ``[core] lazy_discover_providers`` says. Every component loads plugins, so this module imports nothing
heavy: the FastAPI app, with the api-server's auth dependencies, is built on its first request.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/dexcare"


class LazyApp:
    """An ASGI app that builds :func:`dexcare.ui.app.create_app` when the api-server first routes to it."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from dexcare.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class DexCarePagePlugin(AirflowPlugin):
    name = "dexcare"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "DexCare loads"}]
    # Airflow 3.1+: an entry under Browse that shows the page inside the UI (3.0 ignores it; the page is at
    # /dexcare/ there). The href is relative, so it follows the UI's base URL.
    external_views = [
        {"name": "DexCare loads", "href": "dexcare/", "destination": "nav", "category": "browse",
         "url_route": "dexcare"}
    ]
