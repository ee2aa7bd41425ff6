"""The image runs the versions the project tests: the Airflow pinned in constraints.txt (the one installed
here), this package's version from pyproject.toml, and every dependency from constraints.txt."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import tomllib
from typing import Any

from tests.compose import compose_support as cs


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (cs.ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.split(";")[0].strip()
    return pins


def _dockerfile() -> str:
    # Backslash continuations joined, so one instruction is one line.
    return re.sub(r"\\\n\s*", " ", cs.DOCKERFILE.read_text())


def _instructions(keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in _dockerfile().splitlines() if line.startswith(keyword + " ")]


def _arg(name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in _instructions("ARG") if arg.startswith(name + "=")]
    assert len(values) == 1, f"one ARG {name}=... expected in {cs.DOCKERFILE.name}"
    return values[0]


def test_airflow_version_matches_constraints() -> None:
    airflow_pin = _constraints()["apache-airflow"]
    assert _arg("AIRFLOW_VERSION") == airflow_pin
    # ...and is the Airflow the rest of the suite runs on.
    assert importlib.metadata.version("apache-airflow") == airflow_pin


def test_python_version_fits_the_project() -> None:
    (base,) = _instructions("FROM")
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim-\w+", base)
    assert match, base
    image_python = (int(match[1]), int(match[2]))
    pyproject = tomllib.loads((cs.ROOT / "pyproject.toml").read_text())
    minimum = tuple(int(part) for part in pyproject["project"]["requires-python"].removeprefix(">=").split("."))
    assert image_python >= minimum
    # The wheels pinned in constraints.txt (psycopg-binary, asyncpg, ...) were resolved for 3.11.
    assert image_python == (3, 11)


def test_image_tag_carries_the_package_version(compose: dict[str, Any]) -> None:
    version = tomllib.loads((cs.ROOT / "pyproject.toml").read_text())["project"]["version"]
    name = tomllib.loads((cs.ROOT / "pyproject.toml").read_text())["project"]["name"]
    images = {service["image"] for service in compose["services"].values() if "build" in service}
    assert images == {f"{name}:{version}"}


def test_package_installed_with_constraints() -> None:
    installs = [run for run in _instructions("RUN") if "pip install" in run]
    assert len(installs) == 1
    (install,) = installs
    assert "-c constraints.txt" in install
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    assert re.search(r"(^|\s)-e \.(\s|$)", install), "the package itself is installed (editable, from /opt/dexcare)"
    assert "pip check" in install
    assert _instructions("WORKDIR")[0] == "/opt/dexcare", "the compose file mounts plugins/ at /opt/dexcare/plugins"


def test_build_context_holds_what_the_image_copies() -> None:
    """COPY sources exist and pass the Dockerfile's .dockerignore; .env is never sent to the build."""
    patterns = [
        line.strip() for line in cs.DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            if fnmatch.fnmatch(path, body) or fnmatch.fnmatch(path, body.removesuffix("/**") + "/*"):
                keep = negate
        return keep

    sources = []
    for copy in _instructions("COPY"):
        parts = [part for part in copy.split() if not part.startswith("--")]
        sources.extend(parts[:-1])
    assert sources, "the Dockerfile copies the package"
    for source in sources:
        assert (cs.ROOT / source).exists(), source
        probe = f"{source}/__init__.py" if (cs.ROOT / source).is_dir() else source
        assert included(probe), f"{source} is excluded from the build context"
    assert not included(".env")
    assert not included(".venv/bin/python")
    assert "constraints.txt" in sources and "plugins/dexcare" in sources
