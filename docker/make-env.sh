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
# $1 random bytes (default 32) as URL-safe base64 without padding: ceil(4 * $1 / 3) characters, none of
# '=', '+', '/', '$' or quotes to escape anywhere.
token() { head -c "${1:-32}" /dev/urandom | base64 | tr -d '=\n' | tr '+/' '-_'; }

# fill NAME VALUE [MIN_LENGTH]: set NAME unless it already has a value of at least MIN_LENGTH characters
# (default 1). Only pass MIN_LENGTH for a secret that can be replaced at no cost (the JWT secret: tokens signed
# with the old one just expire), never for a key or password that data or volumes depend on.
fill() {
    name=$1
    value=$2
    min=${3:-1}
    current=$(sed -n "s/^${name}=//p" "$target" | head -n 1)
    if [ "${#current}" -ge "$min" ]; then
        return 0
    fi
    tmp="$target.tmp.$$"
    if grep -q "^${name}=" "$target"; then
        # The line is there but empty or too short: replace it in place, keeping the file's order and comments.
        awk -v name="$name" -v value="$value" \
            'index($0, name "=") == 1 && !done { print name "=" value; done = 1; next } { print }' \
            "$target" >"$tmp"
        [ -z "$current" ] || echo "replacing $name: ${#current} characters, shorter than $min"
    else
        cat "$target" >"$tmp"
        printf '%s=%s\n' "$name" "$value" >>"$tmp"
    fi
    mv "$tmp" "$target"
    echo "generated $name"
}

fill AIRFLOW_FERNET_KEY "$(fernet_key)"
# Airflow signs its JWTs with HS512, whose key must be at least 64 bytes (PyJWT warns on every token otherwise):
# 64 random bytes make 86 characters.
fill AIRFLOW_JWT_SECRET "$(token 64)" 64
fill AIRFLOW_API_SECRET_KEY "$(token)"
fill AIRFLOW_ADMIN_PASSWORD "$(token)"
fill POSTGRES_PASSWORD "$(token)"
fill WAREHOUSE_PASSWORD "$(token)"
fill DEXCARE_SANDBOX_TOKEN "$(token)"
fill REDIS_PASSWORD "$(token)"
fill S3_SECRET_KEY "$(token)"
# SQL Server (profile mssql) refuses an sa password without three of: upper case, lower case, digits, symbols.
# A random token nearly always has the first three; the suffix makes sure.
fill MSSQL_SA_PASSWORD "$(token)Aa1"
echo "$target is ready; the Airflow login is AIRFLOW_ADMIN_USERNAME / AIRFLOW_ADMIN_PASSWORD in it"
