"""Who may see the page: whoever Airflow's auth manager lets read the daily DAG, its runs and task instances.

Airflow 3.1 and later give a plugin's FastAPI app the api-server's own dependencies: ``requires_access_dag``
takes the user from the bearer token or the UI's session cookie (refreshed by the api-server's middleware) and
asks the configured auth manager. Airflow 3.0's dependency reads only a bearer header, which a browser that
opens the page does not send; there the same question is asked with the token from the cookie 3.0's login sets.
Either way an anonymous request gets 401 and a user the auth manager refuses gets 403, before any read.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import Depends, HTTPException, Request, status

#: What the page shows of the DAG: the DAG itself, its runs, and its task instances (states, XComs, logs).
ENTITIES = (None, "RUN", "TASK_INSTANCE")


def dag_reader(dag_id: str) -> list[Any]:
    """The route dependencies that refuse anyone who may not read ``dag_id``'s runs and task instances."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api import security

    entities = [None if e is None else DagAccessEntity[e] for e in ENTITIES]
    if "param_dag_id" in inspect.signature(security.requires_access_dag).parameters:
        return [Depends(security.requires_access_dag("GET", entity, param_dag_id=dag_id)) for entity in entities]
    return [Depends(_reader_from_cookie(dag_id, entities))]


def _reader_from_cookie(dag_id: str, entities: list[Any]) -> Any:
    """Airflow 3.0: the user of the bearer token, else of the ``_token`` cookie, checked like 3.1+ checks."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api import security

    get_user: Any = security.get_user  # 3.0's takes the token; the installed newest Airflow's, the request

    async def inner(request: Request) -> None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        bearer = credentials if scheme.lower() == "bearer" else None
        token = bearer or request.cookies.get(COOKIE_NAME_JWT_TOKEN)
        if not token:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated")
        user = await get_user(token)
        for entity in entities:
            if not get_auth_manager().is_authorized_dag(
                method="GET", access_entity=entity, details=DagDetails(id=dag_id), user=user
            ):
                raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")

    return inner
