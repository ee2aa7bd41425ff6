#!/usr/bin/env sh
# Create or complete .env for docker-compose.airflow.yml: copy .env.example if there is no .env, then fill
# every secret that is still empty with a fresh random value. Values already set are never changed (a new
# Fernet key would make stored secrets unreadable, new database passwords would not match the volume).
#
#   docker/make-env.sh            # writes ./.env (git-ignored)
#   docker/make-env.sh other.env  # another file
#
# Plain POSIX sh and /dev/urandom only, so it runs on Linux and macOS with nothing installed.
set -eu

cd "$(dirname "$0")/.."
target=${1:-.env}
umask 077

if [ ! -e "$target" ]; then
    cp .env.example "$target"
    chmod 600 "$target"
    echo "created $target from .env.example"
fi

# 32 random bytes, URL-safe base64: exactly the format of a Fernet key, and usable unescaped in a
# database URL, a JSON string and a .env line.
fernet_key() { head -c 32 /dev/urandom | base64 | tr '+/' '-_'; }
# URL-safe random token without padding (no '=', '+', '/', '$' or quotes to escape anywhere).
token() { head -c 32 /dev/urandom | base64 | tr -d '=+/\n'; }

fill() {
    name=$1
    value=$2
    if grep -q "^${name}=..*" "$target"; then
        return 0
    fi
    tmp="$target.tmp.$$"
    if grep -q "^${name}=" "$target"; then
        # The line is there but empty: fill it in place, keeping the file's order and comments.
        awk -v name="$name" -v value="$value" \
            'index($0, name "=") == 1 && length($0) == length(name) + 1 { print name "=" value; next } { print }' \
            "$target" >"$tmp"
    else
        cat "$target" >"$tmp"
        printf '%s=%s\n' "$name" "$value" >>"$tmp"
    fi
    mv "$tmp" "$target"
    echo "generated $name"
}

fill AIRFLOW_FERNET_KEY "$(fernet_key)"
fill AIRFLOW_JWT_SECRET "$(token)"
fill AIRFLOW_API_SECRET_KEY "$(token)"
fill AIRFLOW_ADMIN_PASSWORD "$(token)"
fill POSTGRES_PASSWORD "$(token)"
fill WAREHOUSE_PASSWORD "$(token)"
fill DEXCARE_SANDBOX_TOKEN "$(token)"
echo "$target is ready; the Airflow login is AIRFLOW_ADMIN_USERNAME / AIRFLOW_ADMIN_PASSWORD in it"
