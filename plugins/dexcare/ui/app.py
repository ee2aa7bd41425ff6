"""The page's FastAPI app, mounted by the api-server at ``/dexcare`` (:mod:`dexcare.ui.plugin`).

One read-only route, rendered on the server: nothing to build, nothing for the browser to fetch, and the same
page on every Airflow 3 version.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from dexcare.ui.auth import dag_reader
from dexcare.ui.runs import DAG_ID


def create_app() -> FastAPI:
    app = FastAPI(title="DexCare", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse, dependencies=dag_reader(DAG_ID))
    def page() -> HTMLResponse:
        from dexcare.ui.data import gather
        from dexcare.ui.view import render

        return HTMLResponse(render(gather()), headers={"Cache-Control": "no-store"})

    return app
