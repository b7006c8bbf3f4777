"""Write .env for the Docker Compose stack from env.example.

Every `change-me` gets a fresh random value and AIRFLOW_UID becomes the current user's id.
An existing .env is kept unless --force: its passwords are already stored in the volumes.

    python3 scripts/make_env.py [--output PATH] [--force]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = "change-me"


def fresh_value(key: str) -> str:
    if key == "AIRFLOW_FERNET_KEY":  # Fernet: 32 random bytes, url-safe base64
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    if key == "S3_ACCESS_KEY":
        return secrets.token_hex(10)
    return secrets.token_hex(24)


def airflow_uid() -> int:
    uid = os.getuid() if hasattr(os, "getuid") else 50000
    return uid or 50000  # never run the Airflow containers as root


def render(template: str) -> str:
    lines = []
    for line in template.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            if value == PLACEHOLDER:
                line = f"{key}={fresh_value(key)}"
            elif key == "AIRFLOW_UID":
                line = f"{key}={airflow_uid()}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write .env with fresh secrets from env.example.")
    parser.add_argument("--template", type=Path, default=ROOT / "env.example")
    parser.add_argument("--output", type=Path, default=ROOT / ".env")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing file (then reset the volumes: "
        "docker compose --profile all down --volumes)",
    )
    args = parser.parse_args(argv)
    if args.output.exists() and not args.force:
        print(f"{args.output} exists, kept as it is (use --force to replace it)", file=sys.stderr)
        return 0
    content = render(args.template.read_text())
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    print(f"wrote {args.output} (AIRFLOW_UID={airflow_uid()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
