"""The image runs the versions the project tests: the Airflow pinned in constraints.txt (the one installed
here), this package's version from pyproject.toml, and every dependency from constraints.txt."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

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
    assert re.search(r"(^|\s)-e (\.|\"\.\[amazon,celery\]\")(\s|$)", install), (
        "the package itself is installed (editable, from /opt/dexcare), with the celery profile's extras"
    )
    assert "pip check" in install
    assert _instructions("WORKDIR")[0] == "/opt/dexcare", "the compose file mounts plugins/ at /opt/dexcare/plugins"


def _copy_sources() -> list[str]:
    sources = []
    for copy in _instructions("COPY"):
        parts = [part for part in copy.split() if not part.startswith("--")]
        sources.extend(parts[:-1])
    return sources


def _buildkit_only(text: str) -> list[str]:
    """Lines of a Dockerfile the classic builder rejects: COPY/ADD flags other than --chown/--from (--chmod,
    --link, --parents, --exclude), any RUN flag (--mount, --network, --security), heredocs, and a BuildKit
    frontend directive."""
    found = [line for line in text.splitlines() if re.match(r"\s*#\s*(syntax|check)\s*=", line, re.IGNORECASE)]
    allowed = {"COPY": {"--chown", "--from"}, "ADD": {"--chown"}, "RUN": set()}
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        keyword, _, rest = line.strip().partition(" ")
        flags = set()
        for token in rest.split():
            if not token.startswith("--"):
                break
            flags.add(token.split("=", 1)[0])
        heredoc = re.search(r"<<-?\s*['\"]?[A-Za-z_]+", line)
        if keyword.upper() in allowed and (heredoc or not flags <= allowed[keyword.upper()]):
            found.append(line)
    return found


def test_dockerfile_needs_no_buildkit() -> None:
    """The classic builder (Docker before Engine 23, DOCKER_BUILDKIT=0, and this repo's own smoke engine)
    rejects BuildKit-only syntax outright: the image builds only if none is used."""
    assert _buildkit_only(cs.DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    "line",
    [
        "COPY --chmod=0755 docker/airflow-init.sh /usr/local/bin/x",
        "COPY --link plugins/dexcare ./plugins/dexcare",
        "RUN --mount=type=cache,target=/root/.cache pip install .",
        "RUN <<EOF\necho hi\nEOF",
        "# syntax=docker/dockerfile:1",
    ],
)
def test_buildkit_only_syntax_is_caught(line: str) -> None:
    assert _buildkit_only(f"FROM python:3.11-slim-bookworm\n{line}\nCOPY --chown=1:0 a b\n")


def test_init_script_is_executable_in_the_image() -> None:
    """Without COPY --chmod, an explicit chmod makes the entrypoint executable whatever the checkout's modes."""
    runs = _instructions("RUN")
    assert any("chmod 0755 /usr/local/bin/dexcare-airflow-init" in run for run in runs)
    assert any(copy.endswith("/usr/local/bin/dexcare-airflow-init") for copy in _instructions("COPY"))


def test_build_context_is_what_the_image_copies(tmp_path: Path) -> None:
    """What a classic build sends, by Docker's own .dockerignore rules (docker-py's port of the CLI's matcher),
    in a checkout that has everything a developer's has: .env, .git, a virtualenv, caches. Only the files the
    Dockerfile copies go (and the Dockerfile itself, which the client always sends). `make compose-smoke`
    checks the same prediction against the real engine."""
    from scripts.compose_smoke import context_files, forbidden_in_context

    tracked = subprocess.run(["git", "ls-files"], cwd=cs.ROOT, capture_output=True, text=True, check=True).stdout
    checkout = tmp_path / "checkout"
    for path in tracked.split():
        if (cs.ROOT / path).is_file():
            (checkout / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cs.ROOT / path, checkout / path)
    extras = [".env", ".git/config", ".git/objects/ab/cdef", ".venv/bin/python", "plugins/dexcare/__pycache__/x.pyc",
              "plugins/dexcare/hooks/__pycache__/dexcare.cpython-311.pyc", "airflow_provider_dexcare.egg-info/PKG-INFO",
              ".pytest_cache/v/cache", "docker/.env", "dags/.env"]
    for extra in extras:
        (checkout / extra).parent.mkdir(parents=True, exist_ok=True)
        (checkout / extra).write_text("secret\n")

    sent = context_files(checkout, checkout / ".dockerignore", dockerfile="docker/Dockerfile.airflow")
    assert forbidden_in_context(sent) == []
    assert not {path for path in sent if "__pycache__" in path or ".venv" in path or "egg-info" in path}
    package = {path for path in tracked.split() if path.startswith("plugins/dexcare/")}
    assert sent == {
        "constraints.txt", "pyproject.toml", "README.md", "docker/airflow-init.sh", "docker/Dockerfile.airflow",
        ".dockerignore", *package,
    }
    # Every COPY source is in it (a new COPY source needs a line in .dockerignore).
    for source in _copy_sources():
        assert source in sent or any(path.startswith(source + "/") for path in sent), source


def test_the_teeth_of_the_context_check(tmp_path: Path) -> None:
    """The same check sees .env and .git when .dockerignore lets them through (e.g. a Dockerfile-specific ignore
    file that the classic builder never reads, leaving it without any rules)."""
    from scripts.compose_smoke import context_files, forbidden_in_context

    for path in (".env", ".git/HEAD", "pyproject.toml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x\n")
    (tmp_path / ".dockerignore").write_text("# nothing excluded\n")
    assert forbidden_in_context(context_files(tmp_path, tmp_path / ".dockerignore", "Dockerfile")) == [
        ".env",
        ".git/HEAD",
    ]


def test_one_dockerignore_for_both_builders() -> None:
    """BuildKit prefers docker/Dockerfile.airflow.dockerignore over the root file, the classic builder reads only
    the root one: a second file would let the two builders send different contexts."""
    assert cs.DOCKERIGNORE == cs.ROOT / ".dockerignore" and cs.DOCKERIGNORE.is_file()
    assert not list((cs.ROOT / "docker").glob("*.dockerignore"))
