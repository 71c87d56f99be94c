#!/usr/bin/env bash
# Run once by the postgres image on an empty data directory: MLflow's database next to
# Prefect's, named as flows/stack.py database_urls() names it (<POSTGRES_DB>_mlflow).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=db="${POSTGRES_DB}_mlflow" --set=owner="$POSTGRES_USER" <<'SQL'
CREATE DATABASE :"db" OWNER :"owner";
SQL
