"""Create (or re-key) the MLflow user the API reads the registry with.

Run once after the server is up, as the admin from .env (MLFLOW_TRACKING_USERNAME/PASSWORD).
The reader gets the server's default permission (READ): it can load the champion but cannot
move the alias.
"""

from __future__ import annotations

import os
import sys
import time

from mlflow.exceptions import RestException
from mlflow.server import get_app_client


def main() -> int:
    username = os.environ["MLFLOW_READER_USERNAME"]
    password = os.environ["MLFLOW_READER_PASSWORD"]
    client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    for attempt in range(30):
        try:
            try:
                client.get_user(username)
            except RestException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                client.create_user(username, password)
                print(f"created MLflow user {username}")
            else:
                client.update_user_password(username, password)
                print(f"MLflow user {username} exists; password set from the environment")
            return 0
        except Exception as exc:  # server still starting: retry for a minute
            print(f"MLflow not ready ({exc}); retry {attempt + 1}/30", file=sys.stderr)
            time.sleep(2)
    return 1


if __name__ == "__main__":
    sys.exit(main())
