#!/usr/bin/env bash
# One-shot setup that docker-compose.airflow.yml runs to completion before any long-running Airflow
# component starts (they depend on it with condition service_completed_successfully). Safe to run on every
# `up`: each step is idempotent.
set -euo pipefail

# Fail with the variable's name rather than with a confusing error from Airflow later on.
: "${AIRFLOW_ADMIN_USERNAME:?AIRFLOW_ADMIN_USERNAME is not set}"
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is not set (run docker/make-env.sh)}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE is not set}"

echo "airflow-init: migrating the metadata database"
airflow db migrate

# Airflow 3's simple auth manager reads user passwords from a JSON file and invents (and logs) a random
# password for any configured user missing from it. Writing the file here makes the login the one in .env,
# and rewriting it on every start makes a changed password take effect. Python does the JSON quoting so any
# password works; the file is replaced atomically and readable only by the airflow user.
python - <<'PY'
import json
import os
import pathlib
import tempfile

path = pathlib.Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.parent.mkdir(parents=True, exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".passwords-")
with os.fdopen(fd, "w") as handle:
    json.dump({os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, handle)
    handle.write("\n")
os.replace(tmp, path)
PY
echo "airflow-init: login for user '${AIRFLOW_ADMIN_USERNAME}' set from AIRFLOW_ADMIN_PASSWORD"

# A missing or broken provider should stop the stack here, not surface as an import error in the first run.
airflow providers get airflow-provider-dexcare

# Connections are environment variables (AIRFLOW_CONN_DEXCARE_DEFAULT, AIRFLOW_CONN_DEXCARE_WAREHOUSE), so
# nothing is written to the database. Show where they point, never the secrets.
python - <<'PY'
from airflow.sdk import Connection

for conn_id in ("dexcare_default", "dexcare_warehouse"):
    conn = Connection.get(conn_id)
    print(f"airflow-init: connection {conn_id}: type={conn.conn_type} host={conn.host} port={conn.port}")
PY
echo "airflow-init: done"
