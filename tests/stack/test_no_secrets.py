"""No file of the repository holds a literal credential: every password, key and token of the
stack comes from .env (git-ignored), and env.example holds placeholders only."""

from __future__ import annotations

import re
import subprocess

from .conftest import ROOT

SKIPPED_SUFFIXES = {".lock", ".csv", ".data", ".png", ".jpg", ".parquet", ".pkl", ".ico"}
PATTERNS = {
    "MinIO default credentials": re.compile(r"minio123|minioadmin", re.IGNORECASE),
    "Airflow default credentials": re.compile(r"airflow:airflow@"),
    "credentials in a URL": re.compile(
        r"[a-z][a-z0-9+.-]*://[A-Za-z0-9._-]+:(?![$<{*]|password@|PASSWORD@|\*)[^@\s/'\"]+@"
    ),
    "JSON Web Token": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}", re.IGNORECASE
    ),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "Fernet key": re.compile(r"FERNET_KEY\s*[=:]\s*['\"]?[A-Za-z0-9_-]{43}="),
}
# KEY=value / KEY: value in configuration files, for keys that name a secret
CONFIG_FILES = re.compile(
    r"(\.ya?ml|\.ini|\.cfg|\.toml|\.env[^/]*|env\.example|\.template"
    r"|Dockerfile)$"
)
SECRET_ASSIGNMENT = re.compile(
    r"^\s*([A-Z0-9_]*(PASSWORD|SECRET|TOKEN|ACCESS_KEY|SECRET_KEY|FERNET_KEY))\s*[=:]\s*"
    r"(.*)$",
    re.MULTILINE,
)
PLACEHOLDER = re.compile(r"^(change-me|\$\{[A-Z0-9_]+(:[-?][^}]*)?\}|\$[A-Z0-9_]+)$")


def repository_files() -> list[str]:
    """Tracked files, and new ones that are not ignored (about to be committed)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({line for line in listed.splitlines() if line})


def scanned() -> list[tuple[str, str]]:
    files = []
    for name in repository_files():
        path = ROOT / name
        if path.suffix in SKIPPED_SUFFIXES or not path.is_file() or name.startswith("data/"):
            continue
        try:
            files.append((name, path.read_text()))
        except UnicodeDecodeError:
            continue
    return files


def test_the_scan_sees_the_stack_files():
    names = {name for name, _ in scanned()}
    assert {"docker-compose.yaml", "env.example", "deploy/stack.env.template"} <= names
    assert ".env" not in names, ".env must stay git-ignored"


def test_no_literal_credentials():
    found = []
    for name, text in scanned():
        if name == "tests/stack/test_no_secrets.py":
            continue
        for what, pattern in PATTERNS.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{name}:{line}: {what}")
        if CONFIG_FILES.search(name):
            for match in SECRET_ASSIGNMENT.finditer(text):
                value = match.group(3).strip().strip("'\"")
                if value and not PLACEHOLDER.match(value):
                    line = text.count("\n", 0, match.start()) + 1
                    found.append(f"{name}:{line}: {match.group(1)} has a literal value")
    assert not found, "literal credentials:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_should():
    samples = [
        "MINIO_ROOT_PASSWORD=minio123",
        "postgresql://airflow:airflow@postgres/airflow",
        "redis://user:hunter2@valkey:6379/0",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl",
        "AKIAABCDEFGHIJKLMNOP",
        "-----BEGIN RSA PRIVATE KEY-----",
    ]
    for sample in samples:
        assert any(p.search(sample) for p in PATTERNS.values()), sample
    assert not PATTERNS["credentials in a URL"].search(
        "postgresql+psycopg2://${AIRFLOW_DB_USER}:${AIRFLOW_DB_PASSWORD}@postgres:5432/x"
    )
    assert SECRET_ASSIGNMENT.search("GRAFANA_ADMIN_PASSWORD=letmein")
    assert PLACEHOLDER.match("${S3_SECRET_KEY:?run make env}")
