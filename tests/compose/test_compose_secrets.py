"""No secret is committed: every key, password and token reaches the stack from .env through ${VAR}
interpolation, is required there (no default to fall back on), and is an empty placeholder in .env.example;
docker/make-env.sh fills them with fresh random values."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet

from tests.compose import compose_support as cs


def _sentinel_env(filled_env: dict[str, str]) -> dict[str, str]:
    return {**filled_env, **{name: f"SENTINEL-{name}" for name in cs.SECRET_VARIABLES}}


def _secret_values(compose: dict[str, Any]) -> dict[str, str]:
    """Every place in the resolved file where a secret ends up, by a readable label."""
    found: dict[str, str] = {}
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            label = f"{name}.{key}"
            if key.startswith("AIRFLOW_CONN_"):
                found[label + ".password"] = json.loads(value)["password"]
            elif key.endswith("SQL_ALCHEMY_CONN"):
                found[label + ".password"] = urlsplit(value).password or ""
            elif re.search(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$", key) and not key.endswith("PASSWORDS_FILE"):
                found[label] = value
    return found


def test_every_secret_comes_from_an_env_variable(compose_binary: Path, filled_env: dict[str, str]) -> None:
    resolved = cs.compose_config(compose_binary, env=_sentinel_env(filled_env))
    secrets = _secret_values(resolved)
    assert len(secrets) >= 20  # fernet, jwt, api key, db url, 2 connections on 5 services; db + sandbox
    sentinels = {f"SENTINEL-{name}" for name in cs.SECRET_VARIABLES}
    literal = {label: value for label, value in secrets.items() if value not in sentinels}
    assert literal == {}, "secrets not taken from .env"


@pytest.mark.parametrize("variable", cs.SECRET_VARIABLES)
def test_a_missing_secret_stops_compose(compose_binary: Path, filled_env: dict[str, str], variable: str) -> None:
    """No fallback default: an empty secret is an error naming the variable and the fix."""
    env = {**filled_env, variable: ""}
    with pytest.raises(cs.MissingVariableError) as error:
        cs.compose_config(compose_binary, env=env)
    assert error.value.name == variable
    assert "docker/make-env.sh" in str(error.value)


def test_no_secret_literal_in_committed_files(filled_env: dict[str, str]) -> None:
    """Nothing that looks like a key or password is written in the files this stack commits."""
    files = [cs.COMPOSE_FILE, cs.DOCKERFILE, cs.ENV_EXAMPLE, cs.MAKE_ENV, cs.AIRFLOW_INIT, cs.POSTGRES_INIT]
    # A long run of base64/hex characters is what a generated secret looks like.
    token = re.compile(r"(?<![A-Za-z0-9_./-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9_./-])")
    for path in files:
        text = path.read_text()
        # Mixed case and digits, unlike the identifiers and paths these files are full of.
        suspicious = [t for t in token.findall(text) if all(re.search(c, t) for c in ("[a-z]", "[A-Z]", "[0-9]"))]
        assert suspicious == [], path.name
        for value in filled_env.values():
            if len(value) >= 16:
                assert value not in text
        # Well-known defaults that would make the stack's passwords guessable.
        assert not re.search(r"PASSWORD\s*[:=]\s*[\"']?(airflow|postgres|admin|password)\b", text, re.I), path.name


def test_env_example_has_placeholders_only() -> None:
    example = cs.read_env_file(cs.ENV_EXAMPLE)
    for name in cs.SECRET_VARIABLES:
        assert example[name] == "", f"{name} must be an empty placeholder in .env.example"
    assert "DEXCARE_KEY" not in example, "the DexCare key stays commented out: the sandbox is the default"
    assert "# DEXCARE_KEY=<reporting service key>" in cs.ENV_EXAMPLE.read_text()


def test_env_is_git_ignored_and_not_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=cs.ROOT, check=False)
    assert ignored.returncode == 0, ".env must be git-ignored"
    tracked = subprocess.run(["git", "ls-files", "--", ".env"], cwd=cs.ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout == ""


def test_make_env_generates_every_secret(
    compose_binary: Path, filled_env_file: Path, filled_env: dict[str, str]
) -> None:
    assert stat.S_IMODE(filled_env_file.stat().st_mode) == 0o600
    for name in cs.SECRET_VARIABLES:
        assert len(filled_env[name]) >= 32, name
        # Usable unescaped in a database URL, a JSON string and a .env line.
        assert re.fullmatch(r"[A-Za-z0-9_=-]+", filled_env[name]), name
    assert len({filled_env[name] for name in cs.SECRET_VARIABLES}) == len(cs.SECRET_VARIABLES)
    Fernet(filled_env["AIRFLOW_FERNET_KEY"].encode())  # raises if it is not a valid Fernet key
    # Everything the compose file requires is now set.
    cs.compose_config(compose_binary, filled_env_file)


def test_make_env_keeps_what_is_set(tmp_path: Path) -> None:
    """Rerunning it, or running it on an .env with your own values, changes nothing that is set: a new
    Fernet key or database password would not match what the volumes already hold."""
    (tmp_path / ".env").write_text("# mine\nPOSTGRES_PASSWORD=my-own-password\nAIRFLOW_FERNET_KEY=\n")
    cs.run_make_env(tmp_path)
    first = (tmp_path / ".env").read_text()
    values = cs.read_env_file(tmp_path / ".env")
    assert values["POSTGRES_PASSWORD"] == "my-own-password"
    assert first.startswith("# mine\nPOSTGRES_PASSWORD=my-own-password\nAIRFLOW_FERNET_KEY=")
    assert set(cs.SECRET_VARIABLES) <= {name for name, value in values.items() if value}
    cs.run_make_env(tmp_path)
    assert (tmp_path / ".env").read_text() == first


def _sign_with_airflow(secret: str) -> str:
    """A token signed the way the api-server signs task and UI tokens (Airflow's JWTGenerator, HS512 for a
    shared secret), with PyJWT's InsecureKeyLengthWarning turned into an error."""
    import warnings

    from airflow.api_fastapi.auth.tokens import JWTGenerator
    from jwt.warnings import InsecureKeyLengthWarning

    generator = JWTGenerator(secret_key=secret, private_key=None, valid_for=60, audience="compose-test", issuer=None)
    assert generator.algorithm == "HS512"
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureKeyLengthWarning)
        return generator.generate({"sub": "compose-test"})


def test_jwt_secret_is_long_enough_for_hs512(filled_env: dict[str, str]) -> None:
    """Airflow signs with HS512, and PyJWT logs InsecureKeyLengthWarning for every token whose key is shorter
    than 64 bytes: make-env.sh's secret must not be."""
    secret = filled_env["AIRFLOW_JWT_SECRET"]
    assert len(secret.encode()) >= 64
    assert _sign_with_airflow(secret).count(".") == 2


def test_a_short_jwt_secret_is_what_airflow_warns_about() -> None:
    """The check above has teeth: the 43-character secret make-env.sh used to generate is refused."""
    from jwt.warnings import InsecureKeyLengthWarning

    with pytest.raises(InsecureKeyLengthWarning):
        _sign_with_airflow("x" * 43)


def test_make_env_replaces_a_short_jwt_secret_only(tmp_path: Path) -> None:
    """An .env from the old make-env.sh gets a long JWT secret on the next run (rotating it only ends
    sessions); every other value, which data or volumes depend on, stays as it is."""
    cs.run_make_env(tmp_path)
    before = cs.read_env_file(tmp_path / ".env")
    short = "s" * 43
    text = (tmp_path / ".env").read_text().replace(before["AIRFLOW_JWT_SECRET"], short)
    (tmp_path / ".env").write_text(text)
    proc = cs.run_make_env(tmp_path)
    assert "replacing AIRFLOW_JWT_SECRET: 43 characters, shorter than 64" in proc.stdout
    after = cs.read_env_file(tmp_path / ".env")
    assert len(after["AIRFLOW_JWT_SECRET"]) >= 64 and after["AIRFLOW_JWT_SECRET"] != short
    assert {k: v for k, v in after.items() if k != "AIRFLOW_JWT_SECRET"} == {
        k: v for k, v in before.items() if k != "AIRFLOW_JWT_SECRET"
    }
    assert short not in proc.stdout + proc.stderr and after["AIRFLOW_JWT_SECRET"] not in proc.stdout
