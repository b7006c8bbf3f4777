"""Write the `x-stack-env` block of docker-compose.yaml from deploy/stack.env.template.

Hosts and ports become Compose service names; secrets and database names stay Compose
variables, filled from .env when Compose reads the file. Both the block and the Celery
integration test come from `heart_mlops.devstack.stack_env.render`, so they agree key by key.

    python scripts/compose_stack_env.py          # rewrite the block
    python scripts/compose_stack_env.py --check  # exit 1 if the block is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from heart_mlops.devstack import stack_env

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yaml"
BEGIN = "  # BEGIN generated from deploy/stack.env.template by scripts/compose_stack_env.py\n"
END = "  # END generated\n"

# what each placeholder of the template is inside the Compose network
COMPOSE_VALUES = {
    "AIRFLOW_API_HOST": "airflow-apiserver",
    "AIRFLOW_API_PORT": "8080",
    "POSTGRES_HOST": "postgres",
    "POSTGRES_PORT": "5432",
    "BROKER_HOST": "valkey",
    "BROKER_PORT": "6379",
    "MLFLOW_HOST": "mlflow",
    "MLFLOW_PORT": "5000",
    # another S3 server (MinIO profile, SeaweedFS, Garage) is chosen in .env
    "S3_HOST": "${S3_HOST:-s3}",
    "S3_PORT": "${S3_PORT:-9000}",
    "AIRFLOW_DB_NAME": "${AIRFLOW_DB_NAME:-airflow}",
    "AIRFLOW_DB_USER": "${AIRFLOW_DB_USER:-airflow}",
    "AIRFLOW_DB_PASSWORD": "${AIRFLOW_DB_PASSWORD:?run make env}",
    "AIRFLOW_JWT_SECRET": "${AIRFLOW_JWT_SECRET:?run make env}",
    "AIRFLOW_SECRET_KEY": "${AIRFLOW_SECRET_KEY:?run make env}",
    "S3_ACCESS_KEY": "${S3_ACCESS_KEY:?run make env}",
    "S3_SECRET_KEY": "${S3_SECRET_KEY:?run make env}",
}


def block() -> str:
    entries = stack_env.render(COMPOSE_VALUES)
    # JSON strings are valid YAML double-quoted scalars
    lines = [f"  {key}: {json.dumps(value)}\n" for key, value in entries.items()]
    return BEGIN + "".join(lines) + END


def updated(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{COMPOSE_FILE.name}: markers of the generated block not found")
    return text[:start] + block() + text[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, change nothing")
    args = parser.parse_args(argv)
    text = COMPOSE_FILE.read_text()
    new = updated(text)
    if args.check:
        if new != text:
            print(
                f"{COMPOSE_FILE.name} is out of date: run python scripts/compose_stack_env.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        COMPOSE_FILE.write_text(new)
        print(f"updated the stack env block of {COMPOSE_FILE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
